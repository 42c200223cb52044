import Foundation
import KeelCore
import Synchronization

/// Wraps a store and fails every commit once a given number of events has been committed: the
/// coordinator using it behaves as if its process died at that point. The data committed
/// before stays, exactly as after a `kill -9`.
public final class FaultInjectingStore: HistoryStore {
    public let base: any HistoryStore
    private let state: Mutex<(committedEvents: Int, crashAfter: Int?)>

    /// - Parameter crashAfterEvents: the number of events after which commits fail;
    ///   a commit that would pass it fails whole.
    public init(_ base: any HistoryStore, crashAfterEvents: Int?) {
        self.base = base
        self.state = Mutex((0, crashAfterEvents))
    }

    public struct Crash: Error, CustomStringConvertible {
        public var description: String { "injected coordinator crash" }
    }

    public var hasCrashed: Bool {
        state.withLock { state in state.crashAfter.map { state.committedEvents >= $0 } ?? false }
    }

    public func commit(_ batch: StoreBatch) throws {
        try state.withLock { state in
            if let limit = state.crashAfter, state.committedEvents + batch.events.count > limit {
                state.committedEvents = limit
                throw Crash()
            }
            try base.commit(batch)
            state.committedEvents += batch.events.count
        }
    }

    public func run(runId: String) throws -> RunRecord? { try base.run(runId: runId) }
    public func latestRun(workflowId: String) throws -> RunRecord? { try base.latestRun(workflowId: workflowId) }
    public func startLookups(requestIds: [String], workflowIds: [String]) throws -> StartLookups {
        try base.startLookups(requestIds: requestIds, workflowIds: workflowIds)
    }
    public func runs(status: RunStatus?, limit: Int) throws -> [RunRecord] { try base.runs(status: status, limit: limit) }
    public func openRuns() throws -> [RunRecord] { try base.openRuns() }
    public func openRunState() throws -> (events: [String: [HistoryEvent]], activities: [String: [ActivityRecord]]) {
        try base.openRunState()
    }
    public func events(runId: String) throws -> [HistoryEvent] { try base.events(runId: runId) }
    public func activities(runId: String) throws -> [ActivityRecord] { try base.activities(runId: runId) }
    public func dueTimers(at time: Date, limit: Int) throws -> [TimerRecord] { try base.dueTimers(at: time, limit: limit) }
    public func nextTimerDeadline() throws -> Date? { try base.nextTimerDeadline() }
    public func outbox(skipping: Set<String>) throws -> [ActivityTask] { try base.outbox(skipping: skipping) }
    public func deadLetterOutbox(skipping: Set<String>) throws -> [DeadLetterEntry] {
        try base.deadLetterOutbox(skipping: skipping)
    }
    public func circuitBreakers() throws -> [CircuitBreakerSnapshot] { try base.circuitBreakers() }
    public func providerCapacity() throws -> [ProviderCapacitySnapshot] { try base.providerCapacity() }
    public func schedules() throws -> [ScheduleRecord] { try base.schedules() }
    public func replaceStalledRuns(_ runs: [StalledRun]) throws { try base.replaceStalledRuns(runs) }
    public func stalledRuns() throws -> [StalledRun] { try base.stalledRuns() }
    public func restorePoint() throws -> Date? { try base.restorePoint() }
    public func clearRestorePoint() throws { try base.clearRestorePoint() }
}
