import Foundation
import Keel

extension Topology {
    /// A namespace of its own, so tests running in parallel never share queues.
    public static func forTest() -> Topology {
        Topology(namespace: "test-\(UUID().uuidString.prefix(8).lowercased())")
    }

    /// Deletes this namespace's exchanges and queues (the standard task queues and `taskQueues`).
    public func remove(from url: AMQPURL, taskQueues: [String] = []) {
        guard let connection = try? AMQPConnection(url: url) else { return }
        defer { connection.close() }
        for queue in [jobsQueue, resultsQueue, deadLetterQueue, historyStream]
            + (Topology.standardTaskQueues + taskQueues).map(queue(forTaskQueue:))
        {
            try? connection.deleteQueue(queue)
        }
        for exchange in [jobsExchange, tasksExchange, resultsExchange, deadLetterExchange] {
            try? connection.deleteExchange(exchange)
        }
    }
}
