import Foundation
import KeelCore
import Logging

// Activities whose last attempt failed: their dead-letter entry, and an operator's redrive or discard.
extension Coordinator {
    /// Gives a parked activity fresh attempts (its retry policy starts counting again, its
    /// schedule-to-close deadline restarts); the workflow continues where it was when one succeeds.
    public func redrive(runId: String, activityId: Int64) async throws {
        let (run, activity) = try parkedActivity(runId: runId, activityId: activityId, for: "redrive")
        var work = Work(now: clock.now())
        var redriven = activity
        append(
            HistoryEvent(id: 0, time: work.now, kind: .activityRedriven, ref: activityId, attempt: activity.attempt),
            to: run, &work)
        redriven.attemptsBeforeRedrive = activity.attempt
        redriven.parkedFailure = nil
        redriven.scheduledAt = work.now
        if let timeout = activity.options.scheduleToCloseTimeout {
            work.batch.set(
                TimerRecord(
                    runId: runId, kind: .scheduleToClose, seq: activityId, fireAt: work.now.addingTimeInterval(timeout)))
        }
        dispatch(&redriven, in: run, &work)
        try await finish(&work)
    }

    /// Hands a parked activity's failure to its workflow, as if it had not been parked.
    public func discard(runId: String, activityId: Int64) async throws {
        let (run, activity) = try parkedActivity(runId: runId, activityId: activityId, for: "discard")
        var work = Work(now: clock.now())
        endActivity(activity, in: run, &work)
        apply(
            HistoryEvent(
                id: 0, time: work.now, kind: .activityFailed, ref: activityId,
                name: HistoryEvent.discardedMark, attempt: activity.attempt,
                failure: activity.parkedFailure
                    ?? Failure(type: "Discarded", message: "discarded from the dead-letter queue", nonRetryable: true)),
            to: run, &work)
        try await finish(&work)
    }

    func parkedActivity(runId: String, activityId: Int64, for action: String) throws -> (LiveRun, ActivityRecord) {
        guard let run = runs[runId] else {
            let status = try store.run(runId: runId)?.status.rawValue ?? "unknown to this coordinator"
            throw ActivityNotParkedError(
                message: "cannot \(action) activity \(activityId) of run \(runId): the run is \(status)")
        }
        guard let activity = run.activities[activityId] else {
            throw ActivityNotParkedError(
                message:
                    "cannot \(action) activity \(activityId) of workflow \(run.record.workflowId): it is not pending (already completed, failed or discarded)"
            )
        }
        guard activity.state == .parked else {
            throw ActivityNotParkedError(
                message:
                    "cannot \(action) activity \(activityId) of workflow \(run.record.workflowId): it is \(activity.state.rawValue), not parked"
            )
        }
        return (run, activity)
    }

    /// Ends an activity whose last attempt failed with no attempt to follow. The activity goes to
    /// the dead-letter queue with its context, in the same transaction; then either the workflow
    /// receives the failure, or (``ActivityOptions/parkOnExhaustion``) the activity is parked
    /// and the workflow waits for an operator's redrive or discard.
    func activityFailedFinally(
        _ activity: inout ActivityRecord, failure: Failure, kind: EventKind, in run: LiveRun, _ work: inout Work
    ) {
        let seq = activity.activityId
        let park = activity.options.parkOnExhaustion
        metrics.deadLettered(activity, parked: park)
        work.batch.deadLetters.append(
            DeadLetterEntry(
                workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
                activityId: seq, activityType: activity.activityType, taskQueue: activity.options.taskQueue,
                input: activity.input, failure: failure, attempts: attempts(of: activity, in: run, final: failure, work),
                parked: park, scheduledAt: activity.scheduledAt, deadLetteredAt: work.now))
        guard park else {
            endActivity(activity, in: run, &work)
            apply(
                HistoryEvent(id: 0, time: work.now, kind: kind, ref: seq, attempt: activity.attempt, failure: failure),
                to: run, &work)
            return
        }
        apply(
            HistoryEvent(id: 0, time: work.now, kind: .activityParked, ref: seq, attempt: activity.attempt, failure: failure),
            to: run, &work)
        deleteTimers([.retry, .scheduleToStart, .startToClose, .heartbeat, .scheduleToClose], of: activity, in: run, &work)
        activity.state = .parked
        activity.startedAt = nil
        activity.startedByClaim = nil
        activity.parkedFailure = failure
        save(activity, in: run, &work)
        logger.warning(
            "activity parked after its last attempt failed; `keel dlq redrive` retries it, `keel dlq discard` fails it",
            metadata: [
                "workflow_id": "\(run.record.workflowId)", "activity": "\(activity.activityType)#\(seq)",
                "error": "\(failure.type)"
            ])
    }

    /// Every failed attempt of `activity` as its history has it, the last one ending with `final`.
    func attempts(
        of activity: ActivityRecord, in run: LiveRun, final: Failure, _ work: Work
    ) -> [DeadLetterEntry.Attempt] {
        let seq = activity.activityId
        let committed = (try? store.events(runId: run.runId)) ?? []
        let pending = work.batch.events.lazy.filter { $0.runId == run.runId }.map(\.event)
        var started: [Int: (worker: String?, at: Date)] = [:]
        var attempts: [DeadLetterEntry.Attempt] = []
        for event in committed + pending where event.ref == seq {
            guard let attempt = event.attempt else { continue }
            switch event.kind {
            case .activityStarted:
                started[attempt] = (event.name, event.time)
            case .activityFailed, .activityTimedOut, .activityParked:
                guard let failure = event.failure else { continue }
                attempts.append(
                    DeadLetterEntry.Attempt(
                        attempt: attempt, worker: started[attempt]?.worker, startedAt: started[attempt]?.at,
                        endedAt: event.time, failure: failure))
            default:
                continue
            }
        }
        let last = activity.attempt
        attempts.append(
            DeadLetterEntry.Attempt(
                attempt: last, worker: started[last]?.worker, startedAt: started[last]?.at, endedAt: work.now, failure: final))
        return attempts
    }
}
