import Foundation

/// Keel's exchanges and queues (see docs/protocol.md), under a namespace (default `keel`).
/// Declared idempotently by every process at start and after every reconnect.
///
/// Deployments sharing a broker, or coordinator shards, use different namespaces
/// (`KEEL_NAMESPACE`).
public struct Topology: Sendable, Hashable {
    public var namespace: String
    /// The type of the durable queues (jobs, results, dead letters, task queues).
    public var queueType: QueueType

    /// RabbitMQ's queue types Keel declares. Quorum queues are replicated over a cluster's
    /// nodes (Raft), so their messages survive the loss of a node; every process of a namespace
    /// must use the same type.
    public enum QueueType: String, Sendable, Hashable, CaseIterable {
        case classic, quorum
    }

    public init(namespace: String = "keel", queueType: QueueType = .classic) {
        self.namespace = namespace
        self.queueType = queueType
    }

    /// `KEEL_NAMESPACE` (or `keel`) and `KEEL_QUEUE_TYPE` (or `classic`; see
    /// ``queueTypeFromEnvironment()`` for the check of its value).
    public static func fromEnvironment() -> Topology {
        let value = ProcessInfo.processInfo.environment["KEEL_NAMESPACE"] ?? ""
        return Topology(
            namespace: value.isEmpty ? "keel" : value, queueType: (try? queueTypeFromEnvironment()) ?? .classic)
    }

    /// `KEEL_QUEUE_TYPE`: `classic` (the default) or `quorum`; throws for anything else.
    public static func queueTypeFromEnvironment() throws -> QueueType {
        let text = ProcessInfo.processInfo.environment["KEEL_QUEUE_TYPE"] ?? ""
        if text.isEmpty { return .classic }
        guard let type = QueueType(rawValue: text) else {
            throw AMQPError(.invalidSetting, "KEEL_QUEUE_TYPE must be classic or quorum, not '\(text)'")
        }
        return type
    }

    /// The `x-queue-type` to declare: none for classic (the broker's default, so queues declared
    /// before this setting existed still match).
    public var queueTypeArgument: String? { queueType == .quorum ? "quorum" : nil }

    public var jobsExchange: String { "\(namespace).jobs" }
    public var jobsQueue: String { "\(namespace).jobs" }
    public var tasksExchange: String { "\(namespace).tasks" }
    public var resultsExchange: String { "\(namespace).results" }
    public var resultsQueue: String { "\(namespace).results" }
    public var deadLetterExchange: String { "\(namespace).dlx" }
    public var deadLetterQueue: String { "\(namespace).dead" }
    /// Fanout to every worker: cancellations of running attempts.
    public var controlExchange: String { "\(namespace).control" }
    /// A worker's own queue on ``controlExchange`` (exclusive to its connection, deleted with it).
    public func controlQueue(worker: String) -> String { "\(namespace).control.\(worker).\(UUID().uuidString.prefix(8))" }
    /// A worker's own queue for the answers to its claims (exclusive to one connection, not
    /// bound to ``controlExchange``): under `control.`, where a worker's broker user may declare
    /// and read (docs/operations.md, "Broker users").
    public func claimAnswersQueue(worker: String) -> String {
        "\(namespace).control.\(worker).claims.\(UUID().uuidString.prefix(8))"
    }
    /// The replicated history log (a stream queue): each write transaction of the active
    /// coordinator, followed by standbys (docs/operations.md, "Replicated history").
    public var historyStream: String { "\(namespace).history" }
    /// The active coordinator's lease on the namespace: an exclusive queue of its connection
    /// (docs/operations.md, "One coordinator per namespace, and a standby").
    public var coordinatorLeaseQueue: String { "\(namespace).coordinator" }
    /// Which coordinator took the lease last: a queue that keeps its newest message only.
    public var leaseHolderQueue: String { "\(namespace).coordinator-holder" }
    public static let jobsRoutingKey = "jobs"
    public static let resultsRoutingKey = "results"
    /// The queues every deployment has; workflows may name more.
    public static let standardTaskQueues = ["default", "llm", "gpu"]
    /// RabbitMQ's direct reply-to pseudo queue, for queries.
    public static let replyTo = "amq.rabbitmq.reply-to"

    /// The RabbitMQ queue serving task queue `name`.
    public func queue(forTaskQueue name: String) -> String { "\(namespace).q.\(name)" }

    /// Declares the fixed topology and the given task queues. A user the broker does not let
    /// configure them (a worker's, a publisher's: docs/operations.md, "Broker users") only
    /// checks that they exist: the coordinator, or an administrator, declares them first.
    public func declare(on connection: AMQPConnection, taskQueues: [String] = Topology.standardTaskQueues) throws {
        do {
            try declareAll(on: connection, taskQueues: taskQueues)
        } catch let refusal as AMQPError where refusal.isAccessRefused {
            try connection.reopenChannel()
            try checkExists(
                exchanges: [deadLetterExchange, jobsExchange, resultsExchange, tasksExchange, controlExchange],
                queues: [deadLetterQueue, jobsQueue, resultsQueue], on: connection, refusal: refusal)
            // A worker's user may declare its own task queue.
            for name in taskQueues { try declareTaskQueue(name, on: connection) }
        }
    }

    /// Declares task queue `name` and binds it; a user that may not only checks that it exists.
    public func declareTaskQueue(_ name: String, on connection: AMQPConnection) throws {
        do {
            try declareTaskQueueAndBind(name, on: connection)
        } catch let refusal as AMQPError where refusal.isAccessRefused {
            try connection.reopenChannel()
            try checkExists(exchanges: [], queues: [queue(forTaskQueue: name)], on: connection, refusal: refusal)
        }
    }

    /// Deletes this namespace's exchanges and queues (the standard task queues and `taskQueues`),
    /// with whatever they hold: for a namespace made for one run, such as a test's or a bench's.
    /// Call it once nothing consumes them. What is already gone, or cannot be reached, is skipped.
    public func remove(from url: AMQPURL, taskQueues: [String] = []) {
        guard let connection = try? AMQPConnection(url: url) else { return }
        defer { connection.close() }
        for queue in [jobsQueue, resultsQueue, deadLetterQueue, historyStream, leaseHolderQueue]
            + (Self.standardTaskQueues + taskQueues).map(queue(forTaskQueue:))
        {
            try? connection.deleteQueue(queue)
        }
        for exchange in [jobsExchange, tasksExchange, resultsExchange, deadLetterExchange, controlExchange] {
            try? connection.deleteExchange(exchange)
        }
    }

    private func checkExists(
        exchanges: [String], queues: [String], on connection: AMQPConnection, refusal: AMQPError
    )
        throws
    {
        do {
            for exchange in exchanges { try connection.checkExchange(exchange) }
            for queue in queues { _ = try connection.inspect(queue: queue) }
        } catch {
            throw AMQPError(
                .declareFailed,
                "the broker user \(connection.url.user) may not declare namespace \(namespace) (\(refusal.message)), and it is not "
                    + "declared yet (\(error)): start the coordinator first (it declares every exchange and queue), or declare "
                    + "them as a user that may")
        }
    }

    private func declareAll(on connection: AMQPConnection, taskQueues: [String]) throws {
        try connection.declareExchange(deadLetterExchange, type: "fanout")
        try connection.declareQueue(deadLetterQueue, deadLetterExchange: nil, queueType: queueTypeArgument)
        try connection.bind(queue: deadLetterQueue, exchange: deadLetterExchange, routingKey: "")
        try connection.declareExchange(jobsExchange, type: "direct")
        try connection.declareQueue(jobsQueue, deadLetterExchange: deadLetterExchange, queueType: queueTypeArgument)
        try connection.bind(queue: jobsQueue, exchange: jobsExchange, routingKey: Self.jobsRoutingKey)
        try connection.declareExchange(resultsExchange, type: "direct")
        try connection.declareQueue(resultsQueue, deadLetterExchange: deadLetterExchange, queueType: queueTypeArgument)
        try connection.bind(queue: resultsQueue, exchange: resultsExchange, routingKey: Self.resultsRoutingKey)
        try connection.declareExchange(tasksExchange, type: "direct")
        try connection.declareExchange(controlExchange, type: "fanout")
        for name in taskQueues { try declareTaskQueueAndBind(name, on: connection) }
    }

    private func declareTaskQueueAndBind(_ name: String, on connection: AMQPConnection) throws {
        try connection.declareQueue(
            queue(forTaskQueue: name), deadLetterExchange: deadLetterExchange, queueType: queueTypeArgument)
        try connection.bind(queue: queue(forTaskQueue: name), exchange: tasksExchange, routingKey: name)
    }
}
