/// Keel's exchanges and queues (see docs/protocol.md). Declared idempotently by every process
/// at start and after every reconnect.
public enum Topology {
    public static let jobsExchange = "keel.jobs"
    public static let jobsQueue = "keel.jobs"
    public static let jobsRoutingKey = "jobs"
    public static let tasksExchange = "keel.tasks"
    public static let resultsExchange = "keel.results"
    public static let resultsQueue = "keel.results"
    public static let resultsRoutingKey = "results"
    public static let deadLetterExchange = "keel.dlx"
    public static let deadLetterQueue = "keel.dead"
    /// The queues every deployment has; workflows may name more.
    public static let standardTaskQueues = ["default", "llm", "gpu"]
    /// RabbitMQ's direct reply-to pseudo queue, for queries.
    public static let replyTo = "amq.rabbitmq.reply-to"

    /// The RabbitMQ queue serving task queue `name`.
    public static func queue(forTaskQueue name: String) -> String { "keel.q.\(name)" }

    /// Declares the fixed topology and the given task queues.
    public static func declare(on connection: AMQPConnection, taskQueues: [String] = standardTaskQueues) throws {
        try connection.declareExchange(deadLetterExchange, type: "fanout")
        try connection.declareQueue(deadLetterQueue, deadLetterExchange: nil)
        try connection.bind(queue: deadLetterQueue, exchange: deadLetterExchange, routingKey: "")
        try connection.declareExchange(jobsExchange, type: "direct")
        try connection.declareQueue(jobsQueue, deadLetterExchange: deadLetterExchange)
        try connection.bind(queue: jobsQueue, exchange: jobsExchange, routingKey: jobsRoutingKey)
        try connection.declareExchange(resultsExchange, type: "direct")
        try connection.declareQueue(resultsQueue, deadLetterExchange: deadLetterExchange)
        try connection.bind(queue: resultsQueue, exchange: resultsExchange, routingKey: resultsRoutingKey)
        try connection.declareExchange(tasksExchange, type: "direct")
        for name in taskQueues { try declareTaskQueue(name, on: connection) }
    }

    public static func declareTaskQueue(_ name: String, on connection: AMQPConnection) throws {
        try connection.declareQueue(queue(forTaskQueue: name), deadLetterExchange: deadLetterExchange)
        try connection.bind(queue: queue(forTaskQueue: name), exchange: tasksExchange, routingKey: name)
    }
}
