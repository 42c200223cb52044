import Foundation

public protocol HistoryStore: Sendable {
    func commit(_ batch: StoreBatch) throws
    func run(runId: String) throws -> RunRecord?
    func latestRun(workflowId: String) throws -> RunRecord?
    /// What a batch of starts checks, in one read: the run each of `requestIds` started and the
    /// latest run of each of `workflowIds` (ids without one are absent).
    func startLookups(requestIds: [String], workflowIds: [String]) throws -> StartLookups
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
    /// The last recorded capacity of every provider the coordinator admits calls to.
    func providerCapacity() throws -> [ProviderCapacitySnapshot]
    /// Replaces the list of stalled runs (the coordinator's last check).
    func replaceStalledRuns(_ runs: [StalledRun]) throws
    /// Runs the coordinator's last check found stalled.
    func stalledRuns() throws -> [StalledRun]
    /// Every schedule, by name.
    func schedules() throws -> [ScheduleRecord]
    /// When the backup this history was restored from was taken, until a coordinator recovered
    /// from it (``clearRestorePoint()``); nil for a history that is not a restored backup.
    func restorePoint() throws -> Date?
    func clearRestorePoint() throws
}

/// The committed runs a batch of starts checks against (``HistoryStore/startLookups(requestIds:workflowIds:)``).
public struct StartLookups: Sendable {
    /// The run each looked-up request id started.
    public var runsByRequestId: [String: RunRecord] = [:]
    /// The latest run of each looked-up workflow id.
    public var latestRunsByWorkflowId: [String: RunRecord] = [:]

    public init() {}
}
