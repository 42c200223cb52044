import Foundation

/// An activity that has not ended: the coordinator's mutable state for it.
public struct ActivityRecord: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
        /// Waiting in the coordinator for capacity (an LLM provider's limits, its task queue's
        /// cap, its run's budget); not published yet.
        case waiting
        /// Published, not yet started by a worker.
        case scheduled
        case started
        /// Waiting for its retry timer.
        case backoff
        /// Exhausted and parked for an operator.
        case parked
    }

    public var runId: String
    public var activityId: Int64
    public var activityType: String
    public var input: Payload
    public var options: ActivityOptions
    public var attempt: Int
    public var state: State
    public var scheduledAt: Date
    public var attemptScheduledAt: Date
    public var startedAt: Date?
    /// The claim (``ActivityClaim/claimId``) that started the current attempt, if one did.
    public var startedByClaim: String?
    /// The worker that started the current attempt: only its result is accepted.
    public var startedBy: String?
    public var heartbeatDetails: Payload?
    /// Attempts used before the last redrive from the dead-letter queue; the retry policy
    /// counts only the attempts after it.
    public var attemptsBeforeRedrive: Int?
    /// The failure that parked the activity (see `ActivityOptions.parkOnExhaustion`).
    public var parkedFailure: Failure?
    /// When the running attempt last heartbeated.
    public var lastHeartbeatAt: Date?
    /// The downstream providers the last failed attempt called (its reported `tries`); a retry
    /// is not made while all their circuit breakers are open.
    public var lastProviders: [String]?
    /// Since when the attempt waits for capacity (state `waiting`); orders the waiting tasks
    /// across a restart.
    public var waitingSince: Date?
    /// For an LLM call: the providers the current attempt may call, in order, chosen at dispatch
    /// against the breakers and the providers' capacity.
    public var route: [String]?
    /// Attempts that a provider's rate limit refused while the coordinator admits by capacity:
    /// they wait for capacity instead of counting against `maximumAttempts`.
    public var rateLimitedAttempts: Int?
    /// How long the current attempt waited in the coordinator for capacity, seconds; recorded
    /// with its start (``ActivityStartedAttributes``) for the timeline.
    public var capacityWait: Double?
    /// How often the current attempt's task came back from RabbitMQ unacknowledged before any
    /// start was recorded. A worker may run a short activity before reporting its start, so
    /// such a task may have run: the first time it goes out again as the same attempt, the next
    /// time the attempt counts as failed (a task that kills every worker still ends).
    public var unstartedRedeliveries: Int?
    /// The current attempt was decided again from a worker's report that RabbitMQ delivered a
    /// second time: a coordinator that stopped before committing its first decision may have
    /// published the attempt's task already (docs/architecture.md, "The next task goes out while
    /// the step is committed"), so every task of this attempt is to be claimed before it runs.
    public var claimFirst: Bool?

    /// Attempts counted by the retry policy: those since the last redrive.
    public var attemptsSinceRedrive: Int { attempt - (attemptsBeforeRedrive ?? 0) - (rateLimitedAttempts ?? 0) }

    public init(
        runId: String, activityId: Int64, activityType: String, input: Payload,
        options: ActivityOptions, scheduledAt: Date
    ) {
        self.runId = runId
        self.activityId = activityId
        self.activityType = activityType
        self.input = input
        self.options = options
        self.attempt = 0
        self.state = .scheduled
        self.scheduledAt = scheduledAt
        self.attemptScheduledAt = scheduledAt
    }
}
