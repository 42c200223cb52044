import Foundation

/// One attempt of an activity, as sent to a worker.
public struct ActivityTask: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    /// The activity's command sequence number in its run; with `runId` it identifies the activity.
    public var activityId: Int64
    public var activityType: String
    public var attempt: Int
    public var input: Payload
    public var taskQueue: String
    public var scheduledAt: Date
    public var attemptScheduledAt: Date
    public var startToCloseTimeout: Double?
    public var scheduleToCloseTimeout: Double?
    public var heartbeatTimeout: Double?
    /// Details of the last heartbeat of an earlier attempt, for resuming long work.
    public var heartbeatDetails: Payload?
    /// The trace context of the run's span (W3C `traceparent` with OpenTelemetry), also sent as
    /// AMQP headers: the worker's span for this attempt continues it.
    public var trace: [String: String]?
    /// Set on a copy the coordinator published again from its outbox (after a restart, or a
    /// publish that failed): the first copy may be queued or running too. A worker claims such a
    /// task (``ActivityClaim``) before it runs it.
    public var republished: Bool?

    public init(
        workflowId: String, runId: String, workflowType: String, activityId: Int64,
        activityType: String, attempt: Int, input: Payload, taskQueue: String, scheduledAt: Date,
        attemptScheduledAt: Date, startToCloseTimeout: Double?, scheduleToCloseTimeout: Double?,
        heartbeatTimeout: Double?, heartbeatDetails: Payload?, trace: [String: String]? = nil
    ) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.activityId = activityId
        self.activityType = activityType
        self.attempt = attempt
        self.input = input
        self.taskQueue = taskQueue
        self.scheduledAt = scheduledAt
        self.attemptScheduledAt = attemptScheduledAt
        self.startToCloseTimeout = startToCloseTimeout
        self.scheduleToCloseTimeout = scheduleToCloseTimeout
        self.heartbeatTimeout = heartbeatTimeout
        self.heartbeatDetails = heartbeatDetails
        self.trace = trace
    }

    /// A key stable across attempts and replays of this step, for deduplicating side effects
    /// (an accounting system's `Idempotency-Key` header).
    public var idempotencyKey: String { "\(workflowId)/\(runId)/\(activityId)" }

    /// Identifies this attempt; results are de-duplicated by it.
    public var attemptKey: String { "\(runId)/\(activityId)/\(attempt)" }
}
