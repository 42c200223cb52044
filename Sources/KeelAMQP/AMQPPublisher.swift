import Dispatch
import Foundation
import Logging

/// Publishes batches with publisher confirms on its own connection and thread: a batch is
/// published in full, then its confirms are awaited together (not one round trip per message).
/// Reconnects (re-declaring the topology) when the connection is lost.
public final class AMQPPublisher: @unchecked Sendable {
    private let url: AMQPURL
    public let topology: Topology
    private let queue = DispatchQueue(label: "keel.amqp.publisher")
    private let logger: Logger
    // Touched only on `queue`.
    private var connection: AMQPConnection?
    private var declaredTaskQueues: Set<String> = []

    public init(url: AMQPURL, topology: Topology, logger: Logger = Logger(label: "keel.amqp")) {
        self.url = url
        self.topology = topology
        self.logger = logger
    }

    /// Publishes `messages` and returns once RabbitMQ confirmed all of them. Task queues named
    /// in `taskQueues` are declared first if this publisher has not declared them yet.
    public func publish(_ messages: [AMQPMessage], taskQueues: Set<String> = []) async throws {
        guard !messages.isEmpty else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async { [self] in
                var lastError: (any Error)?
                for attempt in 0..<3 {
                    do {
                        let connection = try connected()
                        for name in taskQueues where !declaredTaskQueues.contains(name) {
                            try topology.declareTaskQueue(name, on: connection)
                            declaredTaskQueues.insert(name)
                        }
                        for message in messages { try connection.publish(message) }
                        try connection.waitForConfirms()
                        continuation.resume()
                        return
                    } catch {
                        lastError = error
                        logger.warning("publish to \(url) failed (attempt \(attempt + 1) of 3): \(error)")
                        self.connection?.close()
                        self.connection = nil
                        Thread.sleep(forTimeInterval: 0.2 * Double(attempt + 1))
                    }
                }
                continuation.resume(throwing: lastError!)
            }
        }
    }

    private func connected() throws -> AMQPConnection {
        if let connection { return connection }
        let connection = try AMQPConnection(url: url)
        try topology.declare(on: connection)
        try connection.enableConfirms()
        declaredTaskQueues = Set(Topology.standardTaskQueues)
        self.connection = connection
        return connection
    }

    public func close() {
        queue.sync {
            connection?.close()
            connection = nil
        }
    }
}
