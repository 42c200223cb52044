import Dispatch
import Foundation
import Logging
import Synchronization

/// Publishes with publisher confirms on its own connection and thread. Concurrent callers are
/// coalesced: everything requested while a batch is in flight goes out as the next batch, whose
/// confirms are awaited together (not one round trip per message, nor per caller). Reconnects
/// (re-declaring the topology) when the connection is lost.
public final class AMQPPublisher: @unchecked Sendable {
    private struct Request {
        var messages: [AMQPMessage]
        var taskQueues: Set<String>
        var continuation: CheckedContinuation<Void, any Error>
    }

    private let url: AMQPURL
    public let topology: Topology
    private let queue = DispatchQueue(label: "keel.amqp.publisher")
    private let logger: Logger
    private let waiting = Mutex((requests: [Request](), draining: false))
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
            let startDraining = waiting.withLock { waiting in
                waiting.requests.append(Request(messages: messages, taskQueues: taskQueues, continuation: continuation))
                defer { waiting.draining = true }
                return !waiting.draining
            }
            if startDraining { queue.async { [self] in drain() } }
        }
    }

    /// Publishes what is waiting, batch after batch, until nothing is.
    private func drain() {
        while true {
            let batch = waiting.withLock { waiting in
                defer { waiting.requests.removeAll() }
                if waiting.requests.isEmpty { waiting.draining = false }
                return waiting.requests
            }
            guard !batch.isEmpty else { return }
            do {
                try send(batch.flatMap(\.messages), taskQueues: batch.reduce(into: Set()) { $0.formUnion($1.taskQueues) })
                for request in batch { request.continuation.resume() }
            } catch {
                for request in batch { request.continuation.resume(throwing: error) }
            }
        }
    }

    private func send(_ messages: [AMQPMessage], taskQueues: Set<String>) throws {
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
                return
            } catch {
                lastError = error
                logger.warning("publish to \(url) failed (attempt \(attempt + 1) of 3): \(error)")
                self.connection?.close()
                self.connection = nil
                Thread.sleep(forTimeInterval: 0.2 * Double(attempt + 1))
            }
        }
        throw lastError!
    }

    private func connected() throws -> AMQPConnection {
        if let connection { return connection }
        let connection = try AMQPConnection(url: url, logger: logger)
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
