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

    // MARK: Commands

    /// Records `command` or, while replaying, checks it against history.
    /// Returns the recorded event when replaying.
    @discardableResult
    func issue(_ command: Command) throws -> HistoryEvent? {
        try checkUsable()
        if replayCursor < replayCommands.count {
            let recorded = replayCommands[replayCursor]
            guard command.matches(recorded) else {
                throw diverged(eventId: recorded.id, recorded: recorded.summary, issued: command.summary)
            }
            replayCursor += 1
            return recorded
        }
        if replaying {
            throw diverged(eventId: nil, recorded: "no further command", issued: command.summary)
        }
        issued.append(command)
        return nil
    }

    func diverged(eventId: Int64?, recorded: String, issued: String) -> NonDeterminismError {
        let error = NonDeterminismError(
            workflowId: info.workflowId, runId: info.runId, eventId: eventId, recorded: recorded,
            issued: issued)
        if nondeterminism == nil { nondeterminism = error }
        return nondeterminism!
    }

    func checkUsable() throws {
        if let nondeterminism { throw nondeterminism }
        if evicted { throw WorkflowEvictedError() }
        if outcome != nil { throw WorkflowEvictedError() }
    }

    func nextSeq() -> Int64 {
        seq += 1
        return seq
    }

    // MARK: Activities

    /// Runs an activity on a worker and returns its result, retrying per `options.retryPolicy`.
    ///
    /// Throws ``ActivityFailedError`` when the activity failed for good, ``CancelledError`` when
    /// the workflow is cancelled while it waits.
    public func execute<A: Activity>(
        _ activity: A.Type, input: A.Input, options: ActivityOptions
    ) async throws -> A.Output {
        let result = try await execute(activityType: A.name, input: input, options: options)
        return try result.decode(A.Output.self, field: "result of activity \(A.name)")
    }

    /// Runs an activity by type name (for activities implemented outside this process, for
    /// example in Python) and returns its raw JSON result.
    public func execute(
        activityType: String, input: some Encodable, options: ActivityOptions
    ) async throws -> Payload {
        try checkUsable()
        try options.validate(activityType: activityType)
        if options.countsAgainstBudget, budget.isExhausted {
            throw BudgetExhaustedError(budget: budget, activityType: activityType)
        }
        let payload = try Payload(
            encoding: input, field: "input of activity \(activityType)", limit: payloadLimit)
        let seq = nextSeq()
        try issue(.scheduleActivity(seq: seq, type: activityType, input: payload, options: options))
        return try await withCheckedThrowingContinuation { continuation in
            pendingActivities[seq] = PendingActivity(type: activityType, continuation: continuation)
        }
    }

    // MARK: Timers and conditions

    /// Sleeps durably: the timer is stored, survives restarts and fires once.
    public func sleep(for duration: Duration) async throws {
        try checkUsable()
        guard duration > .zero else { return }
        let seq = nextSeq()
        try issue(.startTimer(seq: seq, seconds: duration.seconds))
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            pendingTimers[seq] = continuation
        }
    }

    /// Waits until `predicate` holds. It is checked after every event the workflow receives.
    public func condition(_ predicate: @escaping () -> Bool) async throws {
        _ = try await wait(timeout: nil, predicate)
    }

    /// Waits until `predicate` holds or `timeout` passes; returns whether the predicate held.
    public func condition(timeout: Duration, _ predicate: @escaping () -> Bool) async throws -> Bool {
        try await wait(timeout: timeout, predicate)
    }

    private func wait(timeout: Duration?, _ predicate: @escaping () -> Bool) async throws -> Bool {
        try checkUsable()
        if predicate() { return true }
        var timerSeq: Int64?
        if let timeout {
            guard timeout > .zero else { return false }
            let seq = nextSeq()
            try issue(.startTimer(seq: seq, seconds: timeout.seconds))
            timerSeq = seq
        }
        nextConditionId += 1
        let id = nextConditionId
        return try await withCheckedThrowingContinuation { continuation in
            conditions.append(
                ConditionWait(id: id, timerSeq: timerSeq, predicate: predicate, continuation: continuation))
        }
    }

    // MARK: Signals and queries

    /// Handles signal `name`. Signals that arrived before the handler was set are delivered now,
    /// in arrival order.
    public func onSignal<T: Decodable>(_ name: String, as type: T.Type, _ handler: @escaping (T) -> Void) {
        signalHandlers[name] = { payload in
            handler(try payload.decode(T.self, field: "signal \(name)"))
        }
        let waiting = bufferedSignals.filter { $0.name == name }
        bufferedSignals.removeAll { $0.name == name }
        for signal in waiting { deliverSignal(name: signal.name, payload: signal.payload) }
    }

    /// Handles signal `name`, which carries no value.
    public func onSignal(_ name: String, _ handler: @escaping () -> Void) {
        onSignal(name, as: JSONValue.self) { _ in handler() }
    }

    /// Answers query `name`. Query handlers read state; they cannot await or issue commands.
    public func onQuery<R: Encodable>(_ name: String, _ handler: @escaping () throws -> R) {
        queryHandlers[name] = { [payloadLimit] _ in
            try Payload(encoding: try handler(), field: "result of query \(name)", limit: payloadLimit)
        }
    }

    /// Answers query `name`, which takes an argument.
    public func onQuery<A: Decodable, R: Encodable>(
        _ name: String, argument: A.Type, _ handler: @escaping (A) throws -> R
    ) {
        queryHandlers[name] = { [payloadLimit] payload in
            let argument = try (payload ?? .null).decode(A.self, field: "argument of query \(name)")
            return try Payload(encoding: try handler(argument), field: "result of query \(name)", limit: payloadLimit)
        }
    }

    func deliverSignal(name: String, payload: Payload) {
        guard let handler = signalHandlers[name] else {
            bufferedSignals.append((name, payload))
            return
        }
        do {
            try handler(payload)
        } catch {
            // The signal stays in history as evidence; the workflow keeps running.
            if !replaying {
                logger.warning("signal \(name) was rejected: \(error)")
            }
        }
    }

    // MARK: Side effects and versioning

    /// Runs `body` once and records its result; replay returns the recorded value.
    /// For small nondeterministic values (a timestamp from outside, a generated id).
    public func sideEffect<T: Codable>(_ body: () throws -> T) throws -> T {
        try recorded(marker: "sideEffect", body)
    }

    /// Asks the coordinator's circuit breakers whether calls to `providers` may go out, and
    /// records the question and the answer: replay returns the recorded gate and evaluates
    /// neither `providers` (which may come from configuration) nor live breaker state.
    public func circuitGate(for providers: () -> [String]) throws -> CircuitGate {
        try recorded(marker: "circuitBreakers") {
            let names = providers()
            return CircuitGate(providers: names, decisions: names.map { environment.breakers.admit($0, now: Date()) })
        }
    }

    /// The breakers' states for `providers` (for reporting; deciding is ``circuitGate(for:)``),
    /// recorded in history like the gate.
    public func circuitStates(for providers: () -> [String]) throws -> [String: CircuitState] {
        try recorded(marker: "circuitStates") {
            Dictionary(providers().map { ($0, environment.breakers.state(of: $0)) }, uniquingKeysWith: { first, _ in first })
        }
    }

    /// Runs `body` once and records its value in a marker named `marker`; replay returns it.
    private func recorded<T: Codable>(marker: String, _ body: () throws -> T) throws -> T {
        try checkUsable()
        let seq = nextSeq()
        if replaying {
            let recorded = try issue(.recordMarker(seq: seq, name: marker, value: nil))
            return try (recorded?.payload ?? .null).decode(T.self, field: "\(marker) marker")
        }
        let value = try body()
        let payload = try Payload(encoding: value, field: "\(marker) marker", limit: payloadLimit)
        try issue(.recordMarker(seq: seq, name: marker, value: payload))
        return value
    }

    /// Versioning for running workflows: returns true for runs that reached this point with
    /// the new code, false for runs whose history was made by code without the change.
    ///
    /// ```swift
    /// if context.patched("add-moderation") {
    ///     try await context.execute(Moderate.self, input: text, options: options)
    /// }
    /// ```
    public func patched(_ changeId: String) throws -> Bool {
        try checkUsable()
        if let known = patches[changeId] { return known }
        let name = "patch:" + changeId
        let result: Bool
        if replaying {
            if replayCursor < replayCommands.count,
                replayCommands[replayCursor].kind == .markerRecorded,
                replayCommands[replayCursor].name == name
            {
                try issue(.recordMarker(seq: nextSeq(), name: name, value: nil))
                result = true
            } else {
                result = false
            }
        } else {
            try issue(.recordMarker(seq: nextSeq(), name: name, value: nil))
            result = true
        }
        patches[changeId] = result
        return result
    }

    // MARK: Child workflows and continue-as-new

    /// Starts a child workflow and waits for its result. The child's id defaults to
    /// `<parent id>/child-<n>`, stable across replays.
    public func executeChild<W: Workflow>(
        _ workflow: W.Type, id: String? = nil, input: W.Input, options: WorkflowOptions = .init()
    ) async throws -> W.Output {
        try checkUsable()
        let payload = try Payload(encoding: input, field: "input of child workflow \(W.name)", limit: payloadLimit)
        let seq = nextSeq()
        let childId = id ?? "\(info.workflowId)/child-\(seq)"
        try issue(.startChildWorkflow(seq: seq, type: W.name, workflowId: childId, input: payload, options: options))
        let result = try await withCheckedThrowingContinuation { continuation in
            pendingChildren[seq] = PendingChild(type: W.name, workflowId: childId, continuation: continuation)
        }
        return try result.decode(W.Output.self, field: "result of child workflow \(W.name)")
    }

    /// Ends this run and starts a new run of the same workflow id with `input` and an empty
    /// history. Use it to keep long-lived workflows' histories short.
    public func continueAsNew<I: Encodable>(input: I) throws -> Never {
        let payload = try Payload(encoding: input, field: "continue-as-new input", limit: payloadLimit)
        throw ContinueAsNewRequest(input: payload)
    }

    // MARK: Driving (called by WorkflowInstance)

    func finish(_ command: Command) {
        guard outcome == nil, nondeterminism == nil, !evicted else { return }
        do {
            try issue(command)
            outcome = command
        } catch {
            // The divergence is recorded in `nondeterminism`.
        }
    }

    func resolveActivity(_ event: HistoryEvent) {
        guard let ref = event.ref, let pending = pendingActivities.removeValue(forKey: ref) else { return }
        if event.kind == .activityCompleted {
            pending.continuation.resume(returning: event.payload ?? .null)
        } else {
            let failure = event.failure ?? Failure(type: "Unknown", message: "activity failed")
            pending.continuation.resume(
                throwing: ActivityFailedError(activityType: pending.type, attempts: event.attempt ?? 1, cause: failure))
        }
    }

    func fireTimer(_ seq: Int64) {
        if let continuation = pendingTimers.removeValue(forKey: seq) {
            continuation.resume()
        } else if let index = conditions.firstIndex(where: { $0.timerSeq == seq }) {
            conditions.remove(at: index).continuation.resume(returning: false)
        }
    }

    func resolveChild(_ event: HistoryEvent) {
        guard let ref = event.ref, let pending = pendingChildren.removeValue(forKey: ref) else { return }
        if event.kind == .childWorkflowCompleted {
            pending.continuation.resume(returning: event.payload ?? .null)
        } else {
            pending.continuation.resume(
                throwing: ChildWorkflowFailedError(
                    workflowType: pending.type, workflowId: pending.workflowId,
                    cause: event.failure ?? Failure(type: "Unknown", message: "child failed")))
        }
    }

    /// Cancellation: every pending await throws ``CancelledError``; activities and timers get
    /// cancel commands. Later awaits work normally, so the workflow can compensate.
    func requestCancellation() {
        guard !cancelRequested else { return }
        cancelRequested = true
        for seq in pendingActivities.keys.sorted() {
            try? issue(.cancelActivity(seq: seq))
            pendingActivities.removeValue(forKey: seq)?.continuation.resume(throwing: CancelledError())
        }
        for seq in pendingTimers.keys.sorted() {
            try? issue(.cancelTimer(seq: seq))
            pendingTimers.removeValue(forKey: seq)?.resume(throwing: CancelledError())
        }
        let waits = conditions
        conditions.removeAll()
        for wait in waits {
            if let timerSeq = wait.timerSeq { try? issue(.cancelTimer(seq: timerSeq)) }
            wait.continuation.resume(throwing: CancelledError())
        }
        for seq in pendingChildren.keys.sorted() {
            pendingChildren.removeValue(forKey: seq)?.continuation.resume(throwing: CancelledError())
        }
    }

    /// Resumes the first satisfied condition; returns whether one was.
    func resumeSatisfiedCondition() -> Bool {
        guard nondeterminism == nil, !evicted,
            let index = conditions.firstIndex(where: { $0.predicate() })
        else { return false }
        let wait = conditions.remove(at: index)
        if let timerSeq = wait.timerSeq {
            try? issue(.cancelTimer(seq: timerSeq))
        }
        wait.continuation.resume(returning: true)
        return true
    }

    /// Fails every pending await so the workflow's tasks finish and can be released.
    func evict() {
        evicted = true
        for (_, pending) in pendingActivities { pending.continuation.resume(throwing: WorkflowEvictedError()) }
        for (_, continuation) in pendingTimers { continuation.resume(throwing: WorkflowEvictedError()) }
        for (_, pending) in pendingChildren { pending.continuation.resume(throwing: WorkflowEvictedError()) }
        for wait in conditions { wait.continuation.resume(throwing: WorkflowEvictedError()) }
        pendingActivities.removeAll()
        pendingTimers.removeAll()
        pendingChildren.removeAll()
        conditions.removeAll()
    }
}

/// Thrown by ``WorkflowContext/continueAsNew(input:)``; the engine turns it into a new run.
struct ContinueAsNewRequest: Error {
    var input: Payload
}

/// Thrown into workflow code whose instance is being released from memory (or that diverged).
/// Workflow code should let it propagate.
public struct WorkflowEvictedError: Error, Sendable {}
