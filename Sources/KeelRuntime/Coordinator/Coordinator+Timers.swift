import Foundation
import KeelCore
import Logging

// Durable timers: workflow sleeps, retry backoffs, the four activity timeouts, the execution timeout.
extension Coordinator {
    /// Fires every timer that is due. Returns how many fired.
    @discardableResult
    public func fireDueTimers() async throws -> Int {
        let now = clock.now()
        let due = try store.dueTimers(at: now, limit: configuration.timerBatchSize)
        guard !due.isEmpty else { return 0 }
        var work = Work(now: now)
        for timer in due {
            work.batch.deleteTimer(runId: timer.runId, kind: timer.kind, seq: timer.seq)
            guard let run = runs[timer.runId], run.record.status == .running else { continue }
            fire(timer, in: run, &work)
        }
        try await finish(&work)
        return due.count
    }

    /// When the next timer is due, if any.
    public func nextTimerDeadline() throws -> Date? {
        try store.nextTimerDeadline()
    }

    func fire(_ timer: TimerRecord, in run: LiveRun, _ work: inout Work) {
        let seq = timer.seq
        switch timer.kind {
        case .workflowTimer:
            apply(HistoryEvent(id: 0, time: work.now, kind: .timerFired, ref: seq), to: run, &work)
        case .executionTimeout:
            let failure = Failure(
                type: "WorkflowTimedOut", message: "the workflow execution timeout passed", nonRetryable: true)
            append(HistoryEvent(id: 0, time: work.now, kind: .workflowTimedOut, failure: failure), to: run, &work)
            close(run, status: .timedOut, result: nil, failure: failure, &work)
        case .retry:
            guard var activity = run.activities[seq], activity.state == .backoff else { return }
            // Other activities of the run may have spent the budget during the backoff.
            if let refusal = budgetRefusal(of: activity, in: run, cause: nil) ?? circuitRefusal(of: activity) {
                activityFailedFinally(&activity, failure: refusal, kind: .activityFailed, in: run, &work)
                return
            }
            dispatch(&activity, in: run, &work)
        case .scheduleToStart:
            guard let activity = run.activities[seq], activity.state == .scheduled, activity.attempt == timer.attempt
            else { return }
            timeOut(activity, .scheduleToStart, in: run, &work)
        case .startToClose, .heartbeat:
            guard var activity = run.activities[seq], activity.state == .started, activity.attempt == timer.attempt
            else { return }
            let failure = Failure.timeout(timer.kind == .heartbeat ? .heartbeat : .startToClose)
            stopRunning(activity, reason: "the attempt timed out (\(failure.type))", &work)
            attemptFailed(&activity, failure: failure, kind: .activityTimedOut, in: run, &work)
        case .scheduleToClose:
            guard let activity = run.activities[seq], activity.state != .parked else { return }
            timeOut(activity, .scheduleToClose, in: run, &work)
        }
    }

    /// Ends an activity on a timeout that is never retried (schedule-to-start, schedule-to-close).
    func timeOut(_ activity: ActivityRecord, _ kind: TimeoutKind, in run: LiveRun, _ work: inout Work) {
        var failure = Failure.timeout(kind)
        failure.retryState = .timeout
        stopRunning(activity, reason: "the activity timed out (\(failure.type))", &work)
        var activity = activity
        metrics.attemptFailed(activity, failure: failure, willRetry: false)
        activityFailedFinally(&activity, failure: failure, kind: .activityTimedOut, in: run, &work)
    }
}
