import Foundation
import KeelCore
import Logging

// Finding open runs that make no progress.
extension Coordinator {
    /// Open runs with an activity that has made no progress for `threshold` seconds: a task no
    /// worker took, or a running attempt that neither heartbeated nor finished. Records the list
    /// for `keel list --status stalled` and returns it with the runs that were not stalled at
    /// the last check. (Runs waiting on a signal or a durable timer are not stalled.)
    public func checkStalls(threshold: Double) throws -> (all: [StalledRun], new: [StalledRun]) {
        let now = clock.now()
        var stalled: [StalledRun] = []
        for run in runs.values where run.record.status == .running {
            for activity in run.activities.values.sorted(by: { $0.activityId < $1.activityId }) {
                let label = "activity \(activity.activityType)#\(activity.activityId) (attempt \(activity.attempt))"
                let reason: String
                let since: Date
                switch activity.state {
                case .scheduled:
                    since = activity.attemptScheduledAt
                    let queue = activity.options.taskQueue
                    let running = configuration.startedAttempts.count(taskQueue: queue)
                    reason =
                        "\(label) has waited \(Int(now.timeIntervalSince(since))) s in task queue \(queue): "
                        + (running > 0 ? "its workers are all busy (\(running) attempt(s) running on it)" : "no worker took it")
                case .started:
                    since = max(activity.startedAt ?? activity.attemptScheduledAt, activity.lastHeartbeatAt ?? .distantPast)
                    reason = "\(label) has neither heartbeated nor finished for \(Int(now.timeIntervalSince(since))) s"
                case .backoff, .parked, .waiting:
                    continue
                }
                if now.timeIntervalSince(since) >= threshold {
                    stalled.append(
                        StalledRun(
                            workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
                            reason: reason, since: since))
                    break
                }
            }
        }
        // A timer long past due has not fired: the coordinator's timer loop is behind or stuck.
        var flagged = Set(stalled.map(\.runId))
        for timer in try store.dueTimers(at: now.addingTimeInterval(-threshold), limit: 1000) where !flagged.contains(timer.runId)
        {
            guard let run = runs[timer.runId], run.record.status == .running else { continue }
            flagged.insert(timer.runId)
            stalled.append(
                StalledRun(
                    workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
                    reason: "\(timer.description) was due \(Int(now.timeIntervalSince(timer.fireAt))) s ago and has not fired",
                    since: timer.fireAt))
        }
        let before = Set(stalledRunIds)
        stalledRunIds = flagged
        try store.replaceStalledRuns(stalled)
        return (stalled, stalled.filter { !before.contains($0.runId) })
    }
}
