import Foundation
import Logging

/// Everything deterministic workflow code may await or read.
///
/// The context is driven by a ``WorkflowInstance``: its methods run on the workflow's
/// deterministic executor, and the instance touches its state only between executor runs, so
/// the state needs no lock.
public final class WorkflowContext: @unchecked Sendable {
    public let info: WorkflowInfo
    /// Largest payload the workflow may produce, bytes.
    public let payloadLimit: Int
    public let logger: Logger
    /// Live services of the hosting coordinator (circuit breakers).
    public let environment: WorkflowEnvironment

    // Replay state.
    var seq: Int64 = 0
    var replayCommands: [HistoryEvent] = []
    var replayCursor = 0
    var replaying = false
    var issued: [Command] = []
    var nondeterminism: NonDeterminismError?
    var evicted = false
    var outcome: Command?

    // Workflow state.
    var currentTime: Date
    var rng: DeterministicRandom
    var historyLength: Int64 = 0
    var cancelRequested = false
    var patches: [String: Bool] = [:]
    var pendingActivities: [Int64: PendingActivity] = [:]
    var pendingTimers: [Int64: CheckedContinuation<Void, any Error>] = [:]
    var pendingChildren: [Int64: PendingChild] = [:]
    var conditions: [ConditionWait] = []
    var nextConditionId = 0
    var signalHandlers: [String: (Payload) throws -> Void] = [:]
    var bufferedSignals: [(name: String, payload: Payload)] = []
    var queryHandlers: [String: (Payload?) throws -> Payload] = [:]
    var spendLimit: SpendLimit?
    var spent = Spend.zero
    var retries = 0

    struct PendingActivity {
        var type: String
        var continuation: CheckedContinuation<Payload, any Error>
    }

    struct PendingChild {
        var type: String
        var workflowId: String
        var continuation: CheckedContinuation<Payload, any Error>
    }

    struct ConditionWait {
        var id: Int
        var timerSeq: Int64?
        var predicate: () -> Bool
        var continuation: CheckedContinuation<Bool, any Error>
    }

    init(
        info: WorkflowInfo, seed: UInt64, startTime: Date, payloadLimit: Int, logger: Logger,
        environment: WorkflowEnvironment
    ) {
        self.info = info
        self.environment = environment
        self.payloadLimit = payloadLimit
        self.currentTime = startTime
        self.rng = DeterministicRandom(seed: seed)
        var logger = logger
        logger[metadataKey: "workflow_id"] = "\(info.workflowId)"
        logger[metadataKey: "run_id"] = "\(info.runId)"
        self.logger = logger
    }

    // MARK: Deterministic values

    /// The time of the event the workflow is reacting to. Use it instead of `Date()`.
    public var now: Date { currentTime }

    /// True while the context is re-running code for events already in history.
    public var isReplaying: Bool { replaying }

    /// Number of events in this run's history so far.
    public var historyEventCount: Int64 { historyLength }

    /// Past 10,000 events a run should continue as new to keep replay short.
    public var isContinueAsNewSuggested: Bool { historyLength > 10_000 }

    /// Whether cancellation of this workflow was requested.
    public var isCancellationRequested: Bool { cancelRequested }

    /// A random integer in `range`, the same on every replay.
    public func random(in range: Range<Int>) -> Int { Int.random(in: range, using: &rng) }

    /// A random integer in `range`, the same on every replay.
    public func random(in range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }

    /// A random number in 0..<1, the same on every replay.
    public func randomDouble() -> Double { Double.random(in: 0..<1, using: &rng) }

    /// A UUID, the same on every replay.
    public func uuid() -> UUID { rng.uuid() }

    /// The run's spend so far (every attempt's reported usage, failed attempts included) against
    /// its limit (``WorkflowOptions/budget``).
    public var budget: Budget { Budget(limit: spendLimit, spent: spent) }

    /// Attempts of this run's activities that failed and were retried, so far.
    public var retriedAttempts: Int { retries }
}

/// Thrown by ``WorkflowContext/continueAsNew(input:)``; the engine turns it into a new run.
struct ContinueAsNewRequest: Error {
    var input: Payload
}

/// Thrown into workflow code whose instance is being released from memory (or that diverged).
/// Workflow code should let it propagate.
public struct WorkflowEvictedError: Error, Sendable {}
