import KeelCore
import Synchronization

/// The attempts recorded as started and not ended, counted per task queue, for the queue
/// monitor (``QueueMonitor``): a queue whose tasks wait with no consumer while attempts run on it
/// has workers, all busy (a worker whose every slot runs a long activity stops consuming,
/// ``ActivitySlots``), not none. The coordinator keeps it up to date as it saves and forgets
/// activities; the monitor reads it from its own thread.
public final class StartedAttempts: Sendable {
    private struct Key: Hashable {
        var runId: String
        var activityId: Int64
    }
    private struct State {
        /// The task queue of each started attempt.
        var queues: [Key: String] = [:]
        var counts: [String: Int] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// `activity` as just saved: counted if started, no longer if it is anything else.
    func note(_ activity: ActivityRecord) {
        set(
            Key(runId: activity.runId, activityId: activity.activityId),
            activity.state == .started ? activity.options.taskQueue : nil)
    }

    /// The activity ended, or its run closed.
    func forget(runId: String, activityId: Int64) {
        set(Key(runId: runId, activityId: activityId), nil)
    }

    /// Attempts running on `taskQueue`, as far as the coordinator knows.
    public func count(taskQueue: String) -> Int {
        state.withLock { $0.counts[taskQueue] ?? 0 }
    }

    private func set(_ key: Key, _ queue: String?) {
        state.withLock { state in
            let before = state.queues[key]
            guard before != queue else { return }
            if let before {
                let left = (state.counts[before] ?? 1) - 1
                state.counts[before] = left > 0 ? left : nil
            }
            state.queues[key] = queue
            if let queue { state.counts[queue, default: 0] += 1 }
        }
    }
}
