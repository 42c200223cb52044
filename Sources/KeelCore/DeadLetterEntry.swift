import Foundation

/// An activity that ended in failure, with everything an operator needs to act on it: what it
/// was asked to do, where, and why every attempt failed. The coordinator commits one with the
/// failure and publishes it to the dead-letter exchange (docs/protocol.md, `dead-letter`).
public struct DeadLetterEntry: Codable, Sendable, Hashable {
    /// One attempt as the history recorded it.
    public struct Attempt: Codable, Sendable, Hashable {
        public var attempt: Int
        /// The worker that ran it, if one reported starting it.
        public var worker: String?
        public var startedAt: Date?
        public var endedAt: Date
        public var failure: Failure

        public init(attempt: Int, worker: String?, startedAt: Date?, endedAt: Date, failure: Failure) {
            self.attempt = attempt
            self.worker = worker
            self.startedAt = startedAt
            self.endedAt = endedAt
            self.failure = failure
        }
    }

    /// `<run id>/<activity id>/<last attempt>`: unique, and the id `keel dlq redrive` takes.
    public var id: String
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    public var activityId: Int64
    public var activityType: String
    public var taskQueue: String
    public var input: Payload
    /// The failure that ended the activity (its `retryState` says why no attempt followed).
    public var failure: Failure
    /// Every failed attempt, oldest first.
    public var attempts: [Attempt]
    /// The workflow waits for a redrive or a discard instead of receiving the failure.
    public var parked: Bool
    public var scheduledAt: Date
    public var deadLetteredAt: Date

    public init(
        workflowId: String, runId: String, workflowType: String, activityId: Int64, activityType: String,
        taskQueue: String, input: Payload, failure: Failure, attempts: [Attempt], parked: Bool,
        scheduledAt: Date, deadLetteredAt: Date
    ) {
        self.id = "\(runId)/\(activityId)/\(attempts.last?.attempt ?? 0)"
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.activityId = activityId
        self.activityType = activityType
        self.taskQueue = taskQueue
        self.input = input
        self.failure = failure
        self.attempts = attempts
        self.parked = parked
        self.scheduledAt = scheduledAt
        self.deadLetteredAt = deadLetteredAt
    }
}
