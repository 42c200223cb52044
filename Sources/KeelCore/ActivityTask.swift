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

/// A worker's report that it began an attempt.
public struct ActivityStarted: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    public var time: Date

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, time: Date) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.time = time
    }
}

/// A worker's request to run a republished task (``ActivityTask/republished``), answered over
/// direct reply-to: granted (and recorded as the attempt's start) only while no copy of the
/// attempt has started, so the two copies of a republished task do not both run.
public struct ActivityClaim: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    /// The same on every retry of one claim: a claim granted before (its answer lost) is
    /// granted again, while the worker that ran the other copy is refused.
    public var claimId: String

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, claimId: String) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.claimId = claimId
    }
}

/// A worker's report that RabbitMQ delivered it a task again (the AMQP `redelivered` flag): an
/// earlier delivery was not acknowledged, so a worker may have run it and died. The worker does
/// not run such a task; the coordinator decides (see ``Coordinator``): an attempt it saw start
/// counts as failed and is retried under its policy, one it did not goes out again unchanged.
public struct ActivityRedelivered: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String

    public init(runId: String, activityId: Int64, attempt: Int, worker: String) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
    }
}

/// A running attempt's heartbeat.
public struct ActivityHeartbeat: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var details: Payload?

    public init(runId: String, activityId: Int64, attempt: Int, details: Payload?) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.details = details
    }
}

/// The end of one attempt.
public struct ActivityResult: Codable, Sendable, Hashable {
    public enum Outcome: Codable, Sendable, Hashable {
        case completed(Payload)
        case failed(Failure)
    }

    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    public var outcome: Outcome

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, outcome: Outcome) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.outcome = outcome
    }
}

extension ActivityResult {
    // The documented wire shape (docs/protocol.md), so workers in any language can report.
    enum CodingKeys: String, CodingKey { case runId, activityId, attempt, worker, status, result, failure }

    // {"status": "completed", "result": …} or {"status": "failed", "failure": {"type": …, "message": …}}
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let status = try container.decode(String.self, forKey: .status)
        let outcome: Outcome
        switch status {
        case "completed": outcome = .completed(try container.decodeIfPresent(Payload.self, forKey: .result) ?? .null)
        case "failed": outcome = .failed(try container.decode(Failure.self, forKey: .failure))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .status, in: container, debugDescription: "status must be 'completed' or 'failed', not '\(status)'")
        }
        self.init(
            runId: try container.decode(String.self, forKey: .runId),
            activityId: try container.decode(Int64.self, forKey: .activityId),
            attempt: try container.decode(Int.self, forKey: .attempt),
            worker: try container.decodeIfPresent(String.self, forKey: .worker) ?? "unknown",
            outcome: outcome)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(runId, forKey: .runId)
        try container.encode(activityId, forKey: .activityId)
        try container.encode(attempt, forKey: .attempt)
        try container.encode(worker, forKey: .worker)
        switch outcome {
        case .completed(let payload):
            try container.encode("completed", forKey: .status)
            try container.encode(payload, forKey: .result)
        case .failed(let failure):
            try container.encode("failed", forKey: .status)
            try container.encode(failure, forKey: .failure)
        }
    }
}
