import Foundation
import KeelCore
import Logging

// Workers' reports: started, redelivered, claim, heartbeat, result.
extension Coordinator {
    /// A worker's report (``KeelRuntime/WorkerReport``), for ``apply(_:)``.
    public typealias WorkerReport = KeelRuntime.WorkerReport

    /// Applies worker reports in order, in one transaction (group commit). Returns, per report,
    /// whether it changed anything (false: stale or duplicate, as for ``activityResult(_:)``).
    @discardableResult
    public func apply(_ reports: [WorkerReport]) async throws -> [Bool] {
        var work = Work(now: clock.now())
        let applied = apply(reports, &work)
        try await finish(&work)
        return applied
    }

    func apply(_ reports: [WorkerReport], _ work: inout Work) -> [Bool] {
        var applied: [Bool] = []
        for report in reports {
            switch report {
            case .started(let message): applied.append(started(message, &work))
            case .redelivered(let message): applied.append(redelivered(message, &work))
            case .claim(let message): applied.append(claim(message, &work))
            case .heartbeat(let message): applied.append(heartbeat(message, &work))
            case .result(let message): applied.append(result(message, &work))
            }
        }
        return applied
    }

    /// Like ``apply(_:)``, but returns once the reports are committed: the caller may acknowledge
    /// them, and publishes the outcome with ``publish(_:)`` (meanwhile the next batch can be
    /// applied: the coordinator keeps committing while confirms are on their way).
    /// Also returns, per report, whether it changed anything (for a claim: whether it was granted).
    /// `redelivered`: RabbitMQ delivered one of the reports before (a coordinator may have applied
    /// it without committing). `sendingDuringCommit`: the tasks may go out while the commit is
    /// written, when the publisher can (``TaskPublisher/sendAtOnce(_:)``).
    public func commit(
        _ reports: [WorkerReport], redelivered: Bool = false, sendingDuringCommit: Bool = false
    ) throws -> (outgoing: Outgoing, applied: [Bool]) {
        var work = Work(now: clock.now())
        work.fromRedelivered = redelivered
        work.sendsDuringCommit = sendingDuringCommit
        let applied = apply(reports, &work)
        return (try commit(&work), applied)
    }

    /// A worker began an attempt.
    public func activityStarted(_ message: ActivityStarted) async throws {
        try await apply([.started(message)])
    }

    /// A running attempt is alive; its details go to the next attempt if this one fails.
    public func activityHeartbeat(_ message: ActivityHeartbeat) async throws {
        try await apply([.heartbeat(message)])
    }

    /// An attempt ended. Returns false when the result was stale or a duplicate (already applied,
    /// or for an attempt that timed out); such results change nothing.
    @discardableResult
    public func activityResult(_ message: ActivityResult) async throws -> Bool {
        try await apply([.result(message)])[0]
    }

    /// Gives back what the attempt held for admission, charging its providers what its calls
    /// used; done for every result, even a stale one (the calls were made all the same). A
    /// result that reports no calls and holds nothing costs one look for `"tries"` (as the
    /// breakers already take).
    func settle(_ message: ActivityResult, now: Date) {
        let payload: Payload?
        switch message.outcome {
        case .completed(let result): payload = result
        case .failed(let failure): payload = failure.details
        }
        let outcomes = ProviderOutcome.reported(in: payload)
        guard !admission.holds.isEmpty || !outcomes.isEmpty else { return }
        release(
            ActivityTask.attemptKey(runId: message.runId, activityId: message.activityId, attempt: message.attempt),
            outcomes: outcomes, now: now)
        // The estimate of a budgeted activity that is not an LLM call: the most one attempt spent.
        if let activity = runs[message.runId]?.activities[message.activityId], activity.options.countsAgainstBudget,
            !isLLMCall(activity), let spend = payload.flatMap(Spend.reported(in:))
        {
            let largest = admission.largestSpend[activity.activityType] ?? .zero
            if spend.totalTokens > largest.totalTokens || spend.costUSD > largest.costUSD {
                admission.largestSpend[activity.activityType] = spend
            }
        }
    }

    /// The usage of a result that came after its attempt stopped counting (it timed out, was
    /// cancelled, or its run closed) is still spent: it goes to the run's spend and its
    /// ancestors' (`keel show`, `keel list`, the coordinator's budget checks), unless the attempt's usage is already in
    /// history (a duplicate of an applied result). The workflow's own `context.budget` is
    /// computed from history and does not see it.
    func countLateUsage(_ message: ActivityResult, _ work: inout Work) {
        let payload: Payload?
        switch message.outcome {
        case .completed(let result): payload = result
        case .failed(let failure): payload = failure.details
        }
        guard let spend = payload.flatMap(Spend.reported(in:)) else { return }
        do {
            let counted = try store.events(runId: message.runId).contains {
                $0.ref == message.activityId && $0.attempt == message.attempt && Spend.reported(by: $0) != nil
            }
            guard !counted else { return }
            // The run, and the ancestors a closed run's spend was already charged to (an open
            // run passes it on when it closes).
            var runId: String? = message.runId
            var workflowType: String?
            while let id = runId, let record = try addSpend(spend, toRun: id, &work) {
                workflowType = workflowType ?? record.workflowType
                let chargedParent = runs[id] == nil && record.status != .continuedAsNew
                runId = chargedParent ? record.parentRunId : nil
            }
            guard let workflowType else { return }
            metrics.spent(spend, workflowType: workflowType)
            logger.info(
                "counted the usage of attempt \(message.attempt) of activity #\(message.activityId), which ended after it stopped counting: \(spend.totalTokens) tokens",
                metadata: ["run_id": "\(message.runId)"])
        } catch {
            logger.warning("could not count the late usage of a result: \(error)", metadata: ["run_id": "\(message.runId)"])
        }
    }

    /// Adds `spend` to run `runId`'s spend wherever its record is: open, closed in this unit of
    /// work, counted already in it, or in the store. Returns the record (nil: no such run).
    func addSpend(_ spend: Spend, toRun runId: String, _ work: inout Work) throws -> RunRecord? {
        if let run = runs[runId] ?? work.touched[runId] {
            run.record.spend += spend
            work.touched[run.runId] = run
            return run.record
        }
        if let index = work.batch.runs.lastIndex(where: { $0.runId == runId }) {
            work.batch.runs[index].spend += spend
            return work.batch.runs[index]
        }
        guard var record = try store.run(runId: runId) else { return nil }
        record.spend += spend
        record.updatedAt = work.now
        work.batch.runs.append(record)
        return record
    }

    /// The run and activity a worker's report names, if the report is about the activity's
    /// current attempt (anything else is stale or a duplicate).
    func current(_ runId: String, _ activityId: Int64, attempt: Int) -> (LiveRun, ActivityRecord)? {
        guard let run = runs[runId], let activity = run.activities[activityId], activity.attempt == attempt else { return nil }
        return (run, activity)
    }

    func started(_ message: ActivityStarted, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt),
            activity.state == .scheduled
        else { return false }
        markStarted(&activity, worker: message.worker, in: run, &work)
        return true
    }

    /// RabbitMQ delivered an attempt's task again, so an earlier delivery went unacknowledged
    /// (its worker died or lost its connection), and the worker that got it again did not run
    /// it. An attempt recorded as started may have run: it counts as a failed attempt, and the
    /// retry policy decides on the next (a task that kills its worker every time still ends after
    /// `maximumAttempts`). One never recorded as started was at most briefly run (a worker reports
    /// the start of an activity that outlives `--start-report-delay`) or never run (it waited for
    /// a slot, or its connection dropped): the first time, the same attempt goes out again; the
    /// second time, it counts as a failed attempt, so a task that kills its worker at once
    /// still ends.
    ///
    /// A task handed back (``ActivityRedelivered/handedBack``) was never run: its worker held it
    /// while every one of its slots ran a long activity. It goes out again at no cost to the
    /// attempt, to be claimed before it runs: had that worker died before acknowledging it,
    /// RabbitMQ would deliver the first copy again too.
    func redelivered(_ message: ActivityRedelivered, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt)
        else { return false }
        if message.handedBack == true {
            // Started meanwhile: a copy already runs, nothing to do.
            guard activity.state == .scheduled else { return false }
            var copy = task(for: activity, in: run)
            copy.claimBeforeRunning = true
            work.batch.outbox.append(copy)
            return true
        }
        switch activity.state {
        case .scheduled where (activity.unstartedRedeliveries ?? 0) == 0:
            activity.unstartedRedeliveries = 1
            save(activity, in: run, &work)
            work.batch.outbox.append(task(for: activity, in: run))
            return true
        case .scheduled, .started:
            let why =
                activity.state == .started
                ? "attempt \(activity.attempt) was delivered again (to \(message.worker)): the worker that started it "
                    + "died or lost its connection to RabbitMQ before acknowledging its task"
                : "attempt \(activity.attempt) was delivered again twice (lastly to \(message.worker)) before any "
                    + "worker reported its start: the workers that took it died or lost their connection to RabbitMQ, "
                    + "maybe while running it"
            attemptFailed(
                &activity, failure: Failure(type: "TaskRedelivered", message: why), kind: .activityFailed, in: run, &work)
            return true
        default:
            return false
        }
    }

    /// A worker asks to run a republished copy of an attempt's task. Granted, and recorded as the
    /// attempt's start, while the attempt waits for a worker; granted again to the same claim
    /// (its first answer may have been lost); refused once the attempt started otherwise: some
    /// worker, maybe this one, runs the other copy. Refused too when the provider it was admitted
    /// to has lost the room since (a 429, or headers saying less is left): the attempt waits in
    /// the coordinator again instead of calling the provider.
    func claim(_ message: ActivityClaim, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt)
        else { return false }
        switch activity.state {
        case .scheduled:
            if !confirmAdmission(activity, now: work.now) {
                requeue(&activity, in: run, &work)
                return false
            }
            activity.startedByClaim = message.claimId
            markStarted(&activity, worker: message.worker, in: run, &work)
            return true
        case .started:
            return activity.startedByClaim == message.claimId
        default:
            return false
        }
    }

    func heartbeat(_ message: ActivityHeartbeat, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt) else {
            answerStaleHeartbeat(message, &work)
            return false
        }
        guard activity.state == .started else { return false }
        if let details = message.details { activity.heartbeatDetails = details }
        activity.lastHeartbeatAt = work.now
        if let timeout = activity.options.heartbeatTimeout {
            work.batch.set(
                TimerRecord(
                    runId: run.runId, kind: .heartbeat, seq: activity.activityId,
                    fireAt: work.now.addingTimeInterval(timeout), attempt: activity.attempt))
        }
        save(activity, in: run, &work)
        return true
    }

    func result(_ message: ActivityResult, _ work: inout Work) -> Bool {
        settle(message, now: work.now)
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt),
            activity.state == .scheduled || activity.state == .started
        else {
            // Stale results (an attempt that timed out, a duplicate) are normal; one for an
            // attempt the coordinator never sent is not.
            if let live = runs[message.runId]?.activities[message.activityId], message.attempt > live.attempt {
                logger.warning(
                    "result refused: attempt \(message.attempt) of activity \(live.activityType)#\(live.activityId) was never dispatched (the current attempt is \(live.attempt)); sent by \(message.worker)",
                    metadata: ["run_id": "\(message.runId)"])
                metrics.reportRefused(reason: "not_dispatched")
            } else {
                countLateUsage(message, &work)
            }
            return false
        }
        // Only the worker that holds the attempt ends it: a result in another worker's name is
        // forged or misrouted, and applying it would complete the step with a value nobody ran.
        if activity.state == .started, let holder = activity.startedBy, holder != message.worker {
            logger.warning(
                "result refused: attempt \(message.attempt) of activity \(activity.activityType)#\(activity.activityId) was started by \(holder), not by \(message.worker)",
                metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
            metrics.reportRefused(reason: "not_holder")
            return false
        }
        if activity.state == .scheduled {
            markStarted(&activity, worker: message.worker, ranSeconds: message.ranSeconds, in: run, &work)
        }
        var outcome = message.outcome
        if let failure = configuration.limits.oversizedResult(message) { outcome = .failed(failure) }
        switch outcome {
        case .completed(let payload):
            metrics.attemptCompleted(activity, now: work.now)
            endActivity(activity, in: run, &work)
            apply(
                HistoryEvent(
                    id: 0, time: work.now, kind: .activityCompleted, ref: activity.activityId,
                    attempt: activity.attempt, payload: payload),
                to: run, &work)
        case .failed(let failure):
            attemptFailed(&activity, failure: failure, kind: .activityFailed, in: run, &work)
        }
        return true
    }
}
