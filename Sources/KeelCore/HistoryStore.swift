import Foundation

/// Where a run stands.
public enum RunStatus: String, Codable, Sendable, CaseIterable {
    case running
    case completed
    case failed
    case cancelled
    case terminated
    case timedOut
    case continuedAsNew
    /// Its code diverged from its history; it waits for matching code (see NonDeterminismError).
    case blocked

    public var isOpen: Bool { self == .running || self == .blocked }
}

/// A workflow run as the store keeps it.
public struct RunRecord: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    public var status: RunStatus
    public var input: Payload
    public var result: Payload?
    public var failure: Failure?
    /// De-duplicates start requests: a start with a known request id returns its run.
    public var requestId: String?
    public var parentRunId: String?
    public var parentSeq: Int64?
    public var continuedFromRunId: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var closedAt: Date?
    public var historyLength: Int64
    public var randomSeed: UInt64
    public var options: WorkflowOptions
    /// When the execution timeout ends the run.
    public var executionDeadline: Date?
    // Spend, filled by the LLM layer.
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var costUSD: Double

    // `result` and `failure` are always written, as null when absent: readers in other
    // languages (docs/protocol.md, `describe`) find them without checking for the key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(workflowId, forKey: .workflowId)
        try container.encode(runId, forKey: .runId)
        try container.encode(workflowType, forKey: .workflowType)
        try container.encode(status, forKey: .status)
        try container.encode(input, forKey: .input)
        try container.encode(result, forKey: .result)
        try container.encode(failure, forKey: .failure)
        try container.encodeIfPresent(requestId, forKey: .requestId)
        try container.encodeIfPresent(parentRunId, forKey: .parentRunId)
        try container.encodeIfPresent(parentSeq, forKey: .parentSeq)
        try container.encodeIfPresent(continuedFromRunId, forKey: .continuedFromRunId)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encodeIfPresent(closedAt, forKey: .closedAt)
        try container.encode(historyLength, forKey: .historyLength)
        try container.encode(randomSeed, forKey: .randomSeed)
        try container.encode(options, forKey: .options)
        try container.encodeIfPresent(executionDeadline, forKey: .executionDeadline)
        try container.encode(inputTokens, forKey: .inputTokens)
        try container.encode(outputTokens, forKey: .outputTokens)
        try container.encode(costUSD, forKey: .costUSD)
    }

    /// Tokens and cost of every attempt of every activity of the run.
    public var spend: Spend {
        get { Spend(inputTokens: inputTokens, outputTokens: outputTokens, costUSD: costUSD) }
        set {
            inputTokens = newValue.inputTokens
            outputTokens = newValue.outputTokens
            costUSD = newValue.costUSD
        }
    }

    public init(
        workflowId: String, runId: String, workflowType: String, status: RunStatus, input: Payload,
        requestId: String?, parentRunId: String? = nil, parentSeq: Int64? = nil,
        continuedFromRunId: String? = nil, createdAt: Date, randomSeed: UInt64,
        options: WorkflowOptions, executionDeadline: Date?
    ) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.status = status
        self.input = input
        self.requestId = requestId
        self.parentRunId = parentRunId
        self.parentSeq = parentSeq
        self.continuedFromRunId = continuedFromRunId
        self.createdAt = createdAt
        self.updatedAt = createdAt
        self.historyLength = 0
        self.randomSeed = randomSeed
        self.options = options
        self.executionDeadline = executionDeadline
        self.inputTokens = 0
        self.outputTokens = 0
        self.costUSD = 0
    }
}

/// An open run that has made no progress for too long, and why.
public struct StalledRun: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    /// What it waits on, as a sentence naming the activity and the queue or worker.
    public var reason: String
    /// Since when nothing happened.
    public var since: Date

    public init(workflowId: String, runId: String, workflowType: String, reason: String, since: Date) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.reason = reason
        self.since = since
    }
}

/// An activity that has not ended: the coordinator's mutable state for it.
public struct ActivityRecord: Codable, Sendable, Hashable {
    public enum State: String, Codable, Sendable {
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

    /// Attempts counted by the retry policy: those since the last redrive.
    public var attemptsSinceRedrive: Int { attempt - (attemptsBeforeRedrive ?? 0) }

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

/// A durable timer: workflow sleeps, retry backoff, and every timeout.
public struct TimerRecord: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable {
        case workflowTimer = "t"
        case retry
        case scheduleToStart = "sts"
        case startToClose = "stc"
        case heartbeat = "hb"
        case scheduleToClose = "s2c"
        case executionTimeout = "wft"
    }

    public var runId: String
    public var kind: Kind
    /// The command sequence number (timer or activity); 0 for run-level timers.
    public var seq: Int64
    public var fireAt: Date
    /// The attempt an attempt-level timeout belongs to; a stale one is ignored.
    public var attempt: Int?

    public init(runId: String, kind: Kind, seq: Int64, fireAt: Date, attempt: Int? = nil) {
        self.runId = runId
        self.kind = kind
        self.seq = seq
        self.fireAt = fireAt
        self.attempt = attempt
    }

    public var key: String { "\(kind.rawValue):\(seq)" }

    /// What the timer is for, as a person reads it: "timer #3", "retry of activity #2", ….
    public var description: String {
        switch kind {
        case .workflowTimer: "timer #\(seq)"
        case .retry: "retry of activity #\(seq)"
        case .scheduleToStart: "schedule-to-start timeout of activity #\(seq)"
        case .startToClose: "start-to-close timeout of activity #\(seq)"
        case .heartbeat: "heartbeat timeout of activity #\(seq)"
        case .scheduleToClose: "schedule-to-close timeout of activity #\(seq)"
        case .executionTimeout: "workflow execution timeout"
        }
    }
}

/// Everything one unit of coordinator work changes, committed in one transaction.
///
/// Timer and activity rows are keyed, so a row written and removed within the same batch ends
/// up removed, whatever order the changes came in.
public struct StoreBatch: Sendable {
    public var runs: [RunRecord] = []
    public var events: [(runId: String, event: HistoryEvent)] = []
    /// Activity and timer changes by run, so that clearing a closed run does not scan the batch.
    public private(set) var activityChanges: [String: [Int64: ActivityChange]] = [:]
    public private(set) var timerChanges: [String: [String: TimerChange]] = [:]
    public var clearedRuns: [String] = []
    public var outbox: [ActivityTask] = []
    public var deletedOutbox: [String] = []
    /// Dead-letter entries to publish after the commit (their own outbox).
    public var deadLetters: [DeadLetterEntry] = []
    public var deletedDeadLetters: [String] = []
    /// Circuit breakers whose state changed, for `keel breakers`.
    public var circuitBreakers: [CircuitBreakerSnapshot] = []

    public struct ActivityChange: Sendable {
        public var runId: String
        public var activityId: Int64
        public var record: ActivityRecord?
    }

    public struct TimerChange: Sendable {
        public var runId: String
        public var key: String
        public var record: TimerRecord?
    }

    public init() {}

    public var isEmpty: Bool {
        runs.isEmpty && events.isEmpty && activityChanges.isEmpty && timerChanges.isEmpty && clearedRuns.isEmpty
            && outbox.isEmpty && deletedOutbox.isEmpty && deadLetters.isEmpty && deletedDeadLetters.isEmpty
            && circuitBreakers.isEmpty
    }

    /// Every activity change (an upsert, or a delete when `record` is nil).
    public var activities: [ActivityChange] { activityChanges.values.flatMap(\.values) }

    /// Every timer change (an upsert, or a delete when `record` is nil).
    public var timers: [TimerChange] { timerChanges.values.flatMap(\.values) }

    public mutating func save(_ activity: ActivityRecord) {
        activityChanges[activity.runId, default: [:]][activity.activityId] = ActivityChange(
            runId: activity.runId, activityId: activity.activityId, record: activity)
    }

    public mutating func deleteActivity(runId: String, activityId: Int64) {
        activityChanges[runId, default: [:]][activityId] = ActivityChange(runId: runId, activityId: activityId, record: nil)
    }

    public mutating func set(_ timer: TimerRecord) {
        timerChanges[timer.runId, default: [:]][timer.key] = TimerChange(runId: timer.runId, key: timer.key, record: timer)
    }

    public mutating func deleteTimer(runId: String, kind: TimerRecord.Kind, seq: Int64) {
        let key = "\(kind.rawValue):\(seq)"
        timerChanges[runId, default: [:]][key] = TimerChange(runId: runId, key: key, record: nil)
    }

    public mutating func clear(runId: String) {
        clearedRuns.append(runId)
        activityChanges.removeValue(forKey: runId)
        timerChanges.removeValue(forKey: runId)
    }
}

public protocol HistoryStore: Sendable {
    func commit(_ batch: StoreBatch) throws
    func run(runId: String) throws -> RunRecord?
    func latestRun(workflowId: String) throws -> RunRecord?
    func run(requestId: String) throws -> RunRecord?
    func runs(status: RunStatus?, limit: Int) throws -> [RunRecord]
    func openRuns() throws -> [RunRecord]
    /// Every open run's history and pending activities, by run id, read in bulk (recovery).
    func openRunState() throws -> (events: [String: [HistoryEvent]], activities: [String: [ActivityRecord]])
    func events(runId: String) throws -> [HistoryEvent]
    func activities(runId: String) throws -> [ActivityRecord]
    /// Due timers of running runs (a blocked run's timers wait until it is unblocked).
    func dueTimers(at time: Date, limit: Int) throws -> [TimerRecord]
    /// The earliest timer of a running run, with the same rule as `dueTimers`.
    func nextTimerDeadline() throws -> Date?
    /// Tasks committed but not yet published, oldest first, except those whose attempt key is
    /// in `skipping` (left undecoded).
    func outbox(skipping: Set<String>) throws -> [ActivityTask]
    /// Dead-letter entries committed but not yet published, except those whose id is in `skipping`.
    func deadLetterOutbox(skipping: Set<String>) throws -> [DeadLetterEntry]
    /// The last recorded state of every provider's circuit breaker.
    func circuitBreakers() throws -> [CircuitBreakerSnapshot]
    /// Replaces the list of stalled runs (the coordinator's last check).
    func replaceStalledRuns(_ runs: [StalledRun]) throws
    /// Runs the coordinator's last check found stalled.
    func stalledRuns() throws -> [StalledRun]
}

/// Where time comes from. Tests use a manual clock.
public protocol WallClock: Sendable {
    func now() -> Date
}

/// The system clock.
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}
