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
    /// Set when the attempt must be recorded as started within this many seconds of its
    /// scheduling: the worker then reports its start before it runs the activity, never later.
    public var scheduleToStartTimeout: Double?
    /// Details of the last heartbeat of an earlier attempt, for resuming long work.
    public var heartbeatDetails: Payload?
    /// The trace context of the run's span (W3C `traceparent` with OpenTelemetry), also sent as
    /// AMQP headers: the worker's span for this attempt continues it.
    public var trace: [String: String]?
    /// Set on a copy the coordinator published again from its outbox (after a restart, or a
    /// publish that failed): the first copy may be queued or running too. A worker claims such a
    /// task (``ActivityClaim``) before it runs it.
    public var republished: Bool?
    /// For an LLM call (`llm.complete`): the providers this attempt may call, in order, chosen by
    /// the coordinator at dispatch against the circuit breakers and the providers' capacity.
    /// They take the place of the request's own `providers`.
    public var providers: [String]?
    /// Set when the worker must claim the task (``ActivityClaim``) before running it, as for a
    /// republished copy: the coordinator refuses the claim if the run or the activity was
    /// cancelled meanwhile, so a task that waited in RabbitMQ never reaches a paid provider.
    public var claimBeforeRunning: Bool?
    /// The epoch of the coordinator that published the task (it takes a new one each time it
    /// takes over a history). A worker claims a task whose epoch is older than one it has seen
    /// before running it: a coordinator that lost its lease while paused may publish late.
    public var coordinatorEpoch: Int64?

    public init(
        workflowId: String, runId: String, workflowType: String, activityId: Int64,
        activityType: String, attempt: Int, input: Payload, taskQueue: String, scheduledAt: Date,
        attemptScheduledAt: Date, startToCloseTimeout: Double?, scheduleToCloseTimeout: Double?,
        heartbeatTimeout: Double?, heartbeatDetails: Payload?, scheduleToStartTimeout: Double? = nil,
        trace: [String: String]? = nil, providers: [String]? = nil, claimBeforeRunning: Bool = false
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
        self.scheduleToStartTimeout = scheduleToStartTimeout
        self.trace = trace
        self.providers = providers
        self.claimBeforeRunning = claimBeforeRunning ? true : nil
    }

    /// A key stable across attempts and replays of this step, for deduplicating side effects
    /// (an accounting system's `Idempotency-Key` header).
    public var idempotencyKey: String { "\(workflowId)/\(runId)/\(activityId)" }

    /// Identifies this attempt; results are de-duplicated by it.
    public var attemptKey: String { Self.attemptKey(runId: runId, activityId: activityId, attempt: attempt) }

    /// The key of attempt `attempt` of activity `activityId` of run `runId`.
    public static func attemptKey(runId: String, activityId: Int64, attempt: Int) -> String {
        "\(runId)/\(activityId)/\(attempt)"
    }
}
