import Foundation
import KeelCore
import Logging
import Tracing

// Runs and their workflow code: starting, applying events, carrying out commands, closing.
extension Coordinator {
    func makeInstance(_ record: RunRecord, _ definition: WorkflowDefinition) -> WorkflowInstance {
        WorkflowInstance(
            definition: definition,
            info: WorkflowInfo(
                workflowId: record.workflowId, runId: record.runId, workflowType: record.workflowType,
                parentWorkflowId: nil, parentRunId: record.parentRunId),
            randomSeed: record.randomSeed, startTime: record.createdAt,
            payloadLimit: configuration.payloadLimit, logger: logger,
            environment: WorkflowEnvironment(breakers: breakers, providerChain: configuration.providerChain))
    }

    @discardableResult
    func startRun(
        _ definition: WorkflowDefinition, workflowId: String, input: Payload, options: WorkflowOptions,
        requestId: String?, parent: (runId: String, seq: Int64)?, continuedFrom: RunRecord?, blockedBy: Failure? = nil,
        _ work: inout Work
    ) -> LiveRun {
        let deadline =
            continuedFrom?.executionDeadline
            ?? options.executionTimeout.map { work.now.addingTimeInterval($0) }
        let record = RunRecord(
            workflowId: workflowId, runId: UUID().uuidString.lowercased(), workflowType: definition.name,
            status: .running, input: input, requestId: requestId,
            parentRunId: parent?.runId ?? continuedFrom?.parentRunId,
            parentSeq: parent?.seq ?? continuedFrom?.parentSeq, continuedFromRunId: continuedFrom?.runId,
            createdAt: work.now, randomSeed: generator.next(), options: options, executionDeadline: deadline)
        let run = LiveRun(record: record)
        if let previous = continuedFrom { passParentBudget(from: previous.runId, to: run.runId) }
        if let parentId = record.parentRunId { runs[parentId]?.children.insert(run.runId) }
        startSpan(of: run)
        runs[run.runId] = run
        openRunByWorkflowId[workflowId] = run.runId
        work.touched[run.runId] = run
        metrics.workflowStarted(type: definition.name)
        if let deadline {
            work.batch.set(TimerRecord(runId: run.runId, kind: .executionTimeout, seq: 0, fireAt: deadline))
        }
        let attributes = WorkflowStartedAttributes(
            workflowType: definition.name, workflowId: workflowId, randomSeed: record.randomSeed,
            options: options, parentRunId: record.parentRunId, continuedFromRunId: continuedFrom?.runId,
            carriedSpend: continuedFrom.map(\.spend).flatMap { $0.isZero ? nil : $0 })
        let started = HistoryEvent(
            id: 0, time: work.now, kind: .workflowStarted, name: definition.name, payload: input,
            attributes: try? Payload(encoding: attributes, field: "start attributes", limit: .max))
        if let blockedBy {
            // Recorded, not run: its code is what crashed the coordinator.
            append(started, to: run, &work)
            block(run, blockedBy, &work)
            return run
        }
        run.instance = makeInstance(record, definition)
        apply(started, to: run, startAttributes: attributes, &work)
        return run
    }

    /// Records `event` and, for a running run, lets the workflow react to it (`startAttributes`:
    /// as ``WorkflowInstance/apply(_:startAttributes:)`` says).
    func apply(
        _ event: HistoryEvent, to run: LiveRun, startAttributes: WorkflowStartedAttributes? = nil, _ work: inout Work
    ) {
        let event = append(event, to: run, &work)
        guard run.record.status == .running, let instance = run.instance else { return }
        let activation = guarded(run) { instance.apply(event, startAttributes: startAttributes) }
        if let divergence = activation.nondeterminism {
            guarded(run) { instance.evict() }
            block(run, Failure(divergence), &work)
            return
        }
        process(activation.commands, in: run, &work)
    }

    @discardableResult
    func append(_ event: HistoryEvent, to run: LiveRun, _ work: inout Work) -> HistoryEvent {
        var event = event
        event.id = run.nextEventId
        event.time = work.now
        run.nextEventId += 1
        work.batch.events.append((run.runId, event))
        run.record.historyLength = event.id
        run.record.updatedAt = work.now
        if let spend = Spend.charged(by: event) {
            run.record.spend += spend
            metrics.spent(spend, workflowType: run.record.workflowType)
        }
        work.touched[run.runId] = run
        if event.id == configuration.historyWarningThreshold {
            logger.warning(
                "run history passed \(event.id) events; replay slows as it grows. Use context.continueAsNew(input:) to start a fresh history.",
                metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
        }
        return event
    }

    func process(_ commands: [Command], in run: LiveRun, _ work: inout Work) {
        for command in commands {
            guard run.record.status == .running else { return }
            var encodedOptions: Payload?
            if case .scheduleActivity(_, _, _, let options) = command {
                encodedOptions = encodedActivityOptions.encoding(of: options, Command.encodedAttributes(of:))
            }
            append(command.event(id: 0, time: work.now, encodedOptions: encodedOptions), to: run, &work)
            switch command {
            case .scheduleActivity(let seq, let type, let input, let options):
                var activity = ActivityRecord(
                    runId: run.runId, activityId: seq, activityType: type, input: input, options: options,
                    scheduledAt: work.now)
                if let timeout = options.scheduleToCloseTimeout {
                    work.batch.set(
                        TimerRecord(
                            runId: run.runId, kind: .scheduleToClose, seq: seq, fireAt: work.now.addingTimeInterval(timeout)))
                }
                dispatch(&activity, in: run, &work)
            case .cancelActivity(let seq):
                if let activity = run.activities[seq] {
                    stopRunning(activity, reason: "its workflow cancelled it", &work)
                    endActivity(activity, in: run, &work)
                }
            case .startTimer(let seq, let seconds):
                work.batch.set(
                    TimerRecord(
                        runId: run.runId, kind: .workflowTimer, seq: seq, fireAt: work.now.addingTimeInterval(seconds)))
            case .cancelTimer(let seq):
                work.batch.deleteTimer(runId: run.runId, kind: .workflowTimer, seq: seq)
            case .recordMarker:
                break
            case .startChildWorkflow(let seq, let type, let workflowId, let input, let options):
                startChild(seq: seq, type: type, workflowId: workflowId, input: input, options: options, parent: run, &work)
            case .completeWorkflow(let result):
                close(run, status: .completed, result: result, failure: nil, &work)
            case .failWorkflow(let failure):
                close(run, status: .failed, result: nil, failure: failure, &work)
            case .cancelWorkflow:
                close(run, status: .cancelled, result: nil, failure: Failure(CancelledError()), &work)
            case .continueAsNew(let input):
                close(run, status: .continuedAsNew, result: nil, failure: nil, &work)
                if let definition = try? workflows.definition(named: run.record.workflowType) {
                    startRun(
                        definition, workflowId: run.record.workflowId, input: input, options: run.record.options,
                        requestId: nil, parent: nil, continuedFrom: run.record, &work)
                }
            }
        }
    }

    func startChild(
        seq: Int64, type: String, workflowId: String, input: Payload, options: WorkflowOptions, parent: LiveRun,
        _ work: inout Work
    ) {
        let refused: Failure?
        if workflowId.utf8.count > configuration.limits.workflowId {
            refused = Failure(
                LimitError.tooLarge("child workflow id", size: workflowId.utf8.count, limit: configuration.limits.workflowId))
        } else if let openId = openRunByWorkflowId[workflowId] {
            refused = Failure(
                type: "WorkflowAlreadyStarted", message: "child workflow id \(workflowId) has open run \(openId)",
                nonRetryable: true)
        } else if let definition = try? workflows.definition(named: type) {
            switch budgetForChild(options.budget, of: parent) {
            case .refused(let failure):
                refused = failure
            case .capped(let budget, let held):
                var options = options
                options.budget = budget
                let child = startRun(
                    definition, workflowId: workflowId, input: input, options: options, requestId: nil,
                    parent: (parent.runId, seq), continuedFrom: nil, &work)
                if let held { holdParentBudget(held, of: parent.runId, for: child.runId) }
                refused = nil
            }
        } else {
            refused = Failure(UnknownTypeError(kind: "workflow", name: type, known: workflows.names))
        }
        if let refused {
            apply(
                HistoryEvent(id: 0, time: work.now, kind: .childWorkflowFailed, ref: seq, name: type, failure: refused),
                to: parent, &work)
        }
    }

    func close(_ run: LiveRun, status: RunStatus, result: Payload?, failure: Failure?, _ work: inout Work) {
        metrics.workflowClosed(type: run.record.workflowType, status: status, historyLength: run.record.historyLength)
        run.record.status = status
        run.record.result = result
        run.record.failure = failure
        run.record.closedAt = work.now
        run.record.updatedAt = work.now
        work.touched[run.runId] = run
        work.batch.clear(runId: run.runId)
        for activity in run.activities.values {
            stopRunning(activity, reason: "its run \(status.rawValue)", &work)
            forget(activity, in: run, now: work.now)
        }
        admission.reservedByRun[run.runId] = nil
        // A child gives back the part of its parent's budget it held (a continued child passes
        // it on to its next run, in startRun).
        if status != .continuedAsNew { releaseParentBudget(of: run.runId) }
        run.activities.removeAll()
        runs.removeValue(forKey: run.runId)
        if let parentId = run.record.parentRunId { runs[parentId]?.children.remove(run.runId) }
        if openRunByWorkflowId[run.record.workflowId] == run.runId {
            openRunByWorkflowId.removeValue(forKey: run.record.workflowId)
        }
        if let instance = run.instance, instance.outcome == nil { guarded(run) { instance.evict() } }
        run.instance = nil
        work.closed.append(run.record)
        if let span = run.span { RunTracing.endRunSpan(span, run.record, at: work.now) }
        run.span = nil
        if status != .continuedAsNew { applyParentClosePolicy(to: run, status: status, &work) }
        if status != .continuedAsNew, let parentId = run.record.parentRunId, let seq = run.record.parentSeq,
            let parent = runs[parentId]
        {
            var event: HistoryEvent
            if status == .completed {
                event = HistoryEvent(
                    id: 0, time: work.now, kind: .childWorkflowCompleted, ref: seq, name: run.record.workflowType,
                    payload: result)
            } else {
                event = HistoryEvent(
                    id: 0, time: work.now, kind: .childWorkflowFailed, ref: seq, name: run.record.workflowType,
                    failure: failure
                        ?? Failure(type: "Workflow\(status.rawValue.capitalized)", message: "child run \(status.rawValue)"))
            }
            // The parent is charged with what the child spent (its budget and its spend).
            if !run.record.spend.isZero {
                event.attributes = try? Payload(
                    encoding: ChildClosedAttributes(spend: run.record.spend), field: "child attributes", limit: .max)
            }
            apply(event, to: parent, &work)
        }
    }

    /// The open children of a run that closed get what their parent-close policy says: terminated
    /// (the default), asked to cancel, or left alone.
    func applyParentClosePolicy(to parent: LiveRun, status: RunStatus, _ work: inout Work) {
        let children = parent.children.sorted()
        parent.children.removeAll()
        for childId in children {
            guard let child = runs[childId], child.record.status == .running || child.record.status == .blocked else { continue }
            switch child.record.options.parentClosePolicy ?? .terminate {
            case .terminate:
                terminate(
                    child, reason: "its parent \(parent.record.workflowId) \(status.rawValue) (parent-close policy terminate)",
                    &work)
            case .requestCancel:
                guard child.record.status == .running else { continue }
                apply(HistoryEvent(id: 0, time: work.now, kind: .cancelRequested), to: child, &work)
            case .abandon:
                continue
            }
        }
    }

    func terminate(_ run: LiveRun, reason: String, _ work: inout Work) {
        let failure = Failure(type: "Terminated", message: reason, nonRetryable: true)
        append(HistoryEvent(id: 0, time: work.now, kind: .workflowTerminated, failure: failure), to: run, &work)
        close(run, status: .terminated, result: nil, failure: failure, &work)
    }

    func block(_ run: LiveRun, _ failure: Failure, _ work: inout Work) {
        run.instance = nil
        run.record.status = .blocked
        run.record.failure = failure
        run.record.updatedAt = work.now
        work.touched[run.runId] = run
        logger.error(
            "run stopped: \(failure.message)",
            metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
    }

    func startSpan(of run: LiveRun) {
        guard let span = RunTracing.startRunSpan(run.record, tracer: tracer) else { return }
        run.span = span
        let headers = RunTracing.headers(of: span, tracer: tracer)
        run.traceHeaders = headers.isEmpty ? nil : headers
    }
}
