import Foundation
import KeelAMQP
import KeelCore
import KeelHistory
import KeelRuntime

/// What the console and `/api/` read and do: runs and histories from the coordinator's SQLite
/// file (a reader beside the coordinator, WAL lets both work), signals, cancels, queries and
/// dead-letter operations through RabbitMQ exactly as the `keel` commands send them, and the
/// queue samples of the coordinator's monitor.
public struct ConsoleBackend: Sendable {
    let store: SQLiteHistoryStore
    let client: KeelClient
    let deadLetters: DeadLetterQueue
    let queueSamples: @Sendable () -> [QueueSample]

    public init(
        store: SQLiteHistoryStore, url: AMQPURL, topology: Topology, queueSamples: @escaping @Sendable () -> [QueueSample]
    ) {
        self.store = store
        self.client = KeelClient(url: url, topology: topology)
        self.deadLetters = DeadLetterQueue(url: url, topology: topology)
        self.queueSamples = queueSamples
    }

    public func close() { client.close() }

    // MARK: Reading

    public struct RunList: Codable, Sendable {
        public var runs: [ListedRun]
        /// Every workflow type with runs, for the type filter.
        public var workflowTypes: [String]
        public var stalled: [StalledRun]
    }

    func runs(_ query: RunQuery) throws -> RunList {
        RunList(runs: try store.runs(query), workflowTypes: try store.workflowTypes(), stalled: try store.stalledRuns())
    }

    /// Everything the run page shows.
    public struct RunDetail: Codable, Sendable {
        public var run: RunRecord
        /// Other runs of the same workflow id, newest first (continue-as-new, restarts).
        public var runIds: [String]
        public var events: [HistoryEvent]
        public var attempts: [AttemptSpan]
        /// The activities still open, with their last heartbeat details.
        public var activities: [ActivityRecord]
        /// Why the coordinator's last check flagged it as stalled.
        public var stalledReason: String?
        /// The W3C trace id of the run's spans (see docs/operations.md).
        public var traceId: String
    }

    func run(workflowId: String, runId: String?) throws -> RunDetail? {
        let record: RunRecord?
        if let runId {
            record = try store.run(runId: runId).flatMap { $0.workflowId == workflowId ? $0 : nil }
        } else {
            record = try store.latestRun(workflowId: workflowId)
        }
        guard let record else { return nil }
        let events = try store.events(runId: record.runId)
        return RunDetail(
            run: record, runIds: try store.runIds(workflowId: workflowId), events: events,
            attempts: AttemptTimeline.spans(events),
            activities: try store.activities(runId: record.runId),
            stalledReason: try store.stalledRun(runId: record.runId)?.reason,
            traceId: TraceIdentity.traceId(runId: record.runId))
    }

    func deadLetterItems(limit: Int) async throws -> [DeadLetterItem] {
        let queue = deadLetters
        return try await offPool { try queue.list(limit: limit) }
    }

    func breakers() throws -> [CircuitBreakerSnapshot] { try store.circuitBreakers() }

    /// The schedules as last committed, each with its next five firings.
    func schedules() throws -> [ScheduleDescription] {
        try store.schedules().map { ScheduleDescription(schedule: $0, upcoming: $0.upcoming(after: Date(), count: 5)) }
    }

    func queues() -> [QueueSample] { queueSamples() }

    // MARK: Acting

    func signal(workflowId: String, name: String, input: Payload) async throws {
        try await requireRun(workflowId)
        try await client.signal(workflowId: workflowId, name: name, input: input)
    }

    func cancel(workflowId: String) async throws {
        try await requireRun(workflowId)
        try await client.cancel(workflowId: workflowId)
    }

    func query(workflowId: String, name: String, argument: Payload?) async throws -> Payload {
        try await requireRun(workflowId)
        return try await client.query(workflowId: workflowId, name: name, argument: argument)
    }

    func redrive(id: String) async throws -> DeadLetterQueue.Outcome {
        try await deadLetters.redrive(ids: [id], client: client).first ?? .init(id: id, done: false, detail: "nothing matched")
    }

    func discard(id: String) async throws -> DeadLetterQueue.Outcome {
        try await deadLetters.discard(ids: [id], client: client).first ?? .init(id: id, done: false, detail: "nothing matched")
    }

    private func requireRun(_ workflowId: String) async throws {
        guard try store.latestRun(workflowId: workflowId) != nil else { throw ConsoleError.notFound("no workflow \(workflowId)") }
    }
}

/// A request the API cannot serve, with the HTTP status it answers.
enum ConsoleError: Error {
    case notFound(String)
    case badRequest(String)
}
