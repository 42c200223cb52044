import Foundation
import KeelCore
import Logging
import Tracing

// Start-up: loading open runs, replaying their histories, resuming them.
extension Coordinator {
    /// What ``recover()`` found.
    public struct RecoveryReport: Sendable {
        public var runs = 0
        public var events = 0
        public var blocked = 0
        public var republished = 0
    }

    /// Loads every open run, replays its history and republishes the outbox. Call once at start.
    @discardableResult
    public func recover() async throws -> RecoveryReport {
        let started = ContinuousClock.now
        var report = RecoveryReport()
        var work = Work(now: clock.now())
        if let crash = lastCrash {
            let outlook =
                crash.count >= 2
                ? "it happened \(crash.count) times in a row, so the run is quarantined (blocked)"
                : "it runs once more, and is quarantined if it crashes again"
            logger.error(
                "the previous coordinator died while running the workflow code of \(crash.workflowId) (run \(crash.runId), after event \(crash.lastEventId)): \(CrashMarker.describe(signal: crash.signal)); \(outlook)"
            )
        }
        try restoreCapacity(now: work.now)
        schedules = Dictionary(uniqueKeysWithValues: try store.schedules().map { ($0.spec.name, $0) })
        let state = try store.openRunState()
        var loaded: [(ActivityRecord, LiveRun)] = []
        for record in try store.openRuns() {
            let run = LiveRun(record: record)
            startSpan(of: run)
            for activity in state.activities[record.runId] ?? [] {
                run.activities[activity.activityId] = activity
                configuration.startedAttempts.note(activity)
                loaded.append((activity, run))
            }
            let events = state.events[record.runId] ?? []
            run.nextEventId = (events.last?.id ?? 0) + 1
            runs[run.runId] = run
            openRunByWorkflowId[record.workflowId] = run.runId
            report.runs += 1
            report.events += events.count
            if let failure = quarantine(workflowId: record.workflowId) {
                block(run, failure, &work)
                report.blocked += 1
                continue
            }
            if record.status == .blocked, record.failure?.type == Self.crashedType {
                report.blocked += 1  // stays blocked until an operator unblocks it
                continue
            }
            guard let definition = try? workflows.definition(named: record.workflowType) else {
                let error = UnknownTypeError(kind: "workflow", name: record.workflowType, known: workflows.names)
                block(run, Failure(error), &work)
                report.blocked += 1
                continue
            }
            if resume(run, definition, events, &work) != nil { report.blocked += 1 }
        }
        readmit(loaded.filter { $0.1.record.status == .running }, now: work.now)
        holdChildBudgets()
        for run in runs.values { if let parentId = run.record.parentRunId { runs[parentId]?.children.insert(run.runId) } }
        let restoredFrom = try store.restorePoint()
        if restoredFrom != nil { republishScheduled(&work) }
        try await finish(&work)
        // The first copy of each task in the outbox may have gone out, and may run on a worker
        // that heard of no newer epoch than its publisher's and reports its start only after
        // ``WorkerService/Configuration/startReportDelay``: the copies wait
        // (``redeliveredTaskDelay``), so that such a start arrives before this coordinator could
        // grant the claim of a second copy. ``flushOutbox()`` sends them once due (the timers'
        // loop calls it every second), unless the first copy started meanwhile.
        report.republished = try await flushOutbox(holdingUntil: work.now.addingTimeInterval(Self.redeliveredTaskDelay))
        if let restoredFrom {
            try store.clearRestorePoint()
            logger.warning(
                "this history is a backup taken at \(restoredFrom): what the original coordinator did after that is not in it; tasks it holds as published and not started went out again (workers claim them)"
            )
        }
        metrics.recovered(runs: report.runs, events: report.events, seconds: (ContinuousClock.now - started).seconds)
        logger.info(
            "recovered \(report.runs) open runs (\(report.events) events, \(report.blocked) blocked, \(report.republished) tasks republished)"
        )
        return report
    }

    /// Puts the task of every published, unstarted attempt of a running run into the outbox
    /// again. After a restore from a backup, such a task may have run and its result gone to the
    /// coordinator the backup was taken from: nothing would come back for it. Published again,
    /// it is claimed before it runs, so the copy still queued, if any, and this one start once.
    private func republishScheduled(_ work: inout Work) {
        for run in runs.values where run.record.status == .running {
            for activity in run.activities.values where activity.state == .scheduled {
                work.batch.outbox.append(task(for: activity, in: run))
            }
        }
    }

    /// Replays `run`'s history with its workflow code and lets it go on from there (a blocked
    /// run is unblocked); or blocks it when the history does not replay, and returns why.
    func resume(
        _ run: LiveRun, _ definition: WorkflowDefinition, _ events: [HistoryEvent], _ work: inout Work
    ) -> NonDeterminismError? {
        let instance = makeInstance(run.record, definition)
        let activation = guarded(run) { instance.replay(events) }
        if let divergence = activation.nondeterminism {
            guarded(run) { instance.evict() }
            block(run, Failure(divergence), &work)
            return divergence
        }
        run.instance = instance
        if run.record.status == .blocked {
            run.record.status = .running
            run.record.failure = nil
            work.touched[run.runId] = run
            logger.info("run unblocked: its history replays with this code", metadata: ["run_id": "\(run.runId)"])
        }
        process(activation.commands, in: run, &work)
        return nil
    }
}
