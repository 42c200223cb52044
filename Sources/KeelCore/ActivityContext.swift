import Foundation
import Synchronization

/// What a running activity attempt knows about itself, and how it heartbeats.
public final class ActivityContext: Sendable {
    public let task: ActivityTask
    public let worker: String
    private let heartbeatSink: @Sendable (Payload?) -> Void

    public init(task: ActivityTask, worker: String, heartbeat: @escaping @Sendable (Payload?) -> Void) {
        self.task = task
        self.worker = worker
        self.heartbeatSink = heartbeat
    }

    /// Attempt number, from 1.
    public var attempt: Int { task.attempt }
    public var workflowId: String { task.workflowId }
    public var runId: String { task.runId }
    public var activityType: String { task.activityType }
    /// Stable across attempts and replays of this step.
    public var idempotencyKey: String { task.idempotencyKey }

    /// Reports liveness; `details` (progress) are handed to the next attempt if this one fails.
    public func heartbeat<T: Encodable>(_ details: T) {
        heartbeatSink(try? Payload(encoding: details, field: "heartbeat details"))
    }

    /// Reports liveness without details.
    public func heartbeat() { heartbeatSink(nil) }

    /// Whether the coordinator asked to stop this attempt (its run closed, its workflow cancelled
    /// it, it timed out), read from the activity's own task (or a child of it). A long activity
    /// checks it between steps, or lets `Task.checkCancellation()` and cancellable awaits throw.
    public var isCancelled: Bool { Task.isCancelled }

    /// Details of the last heartbeat of the previous attempt, if it sent any.
    public func lastHeartbeatDetails<T: Decodable>(as type: T.Type) -> T? {
        try? task.heartbeatDetails?.decode(T.self)
    }
}
