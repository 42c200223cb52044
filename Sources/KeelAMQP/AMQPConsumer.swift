import Foundation
import Logging
import Synchronization

/// Consumes one queue on a dedicated thread (rabbitmq-c blocks) and hands deliveries to async
/// code. Acknowledgements are queued back to the thread, which owns the connection. After a
/// lost connection it reconnects with backoff, re-declares the topology and consumes again;
/// deliveries of the old connection are then redelivered by the broker, and their late acks
/// are dropped.
public final class AMQPConsumer: Sendable {
    public struct Delivery: Sendable {
        public var message: AMQPDelivery
        /// Which connection delivered it.
        public var generation: Int
    }

    private enum Settlement: Sendable {
        case ack(UInt64)
        case reject(UInt64)
    }

    private let url: AMQPURL
    private let queue: String
    private let prefetch: Int
    private let declare: @Sendable (AMQPConnection) throws -> Void
    private let logger: Logger
    private let state = Mutex((stopped: false, generation: 0, pending: [(generation: Int, settlement: Settlement)]()))
    public let deliveries: AsyncStream<Delivery>
    private let continuation: AsyncStream<Delivery>.Continuation

    public init(
        url: AMQPURL, queue: String, prefetch: Int, logger: Logger = Logger(label: "keel.amqp"),
        declare: @escaping @Sendable (AMQPConnection) throws -> Void
    ) {
        self.url = url
        self.queue = queue
        self.prefetch = prefetch
        self.declare = declare
        self.logger = logger
        (deliveries, continuation) = AsyncStream.makeStream(of: Delivery.self)
    }

    /// Starts the consuming thread.
    public func start() {
        let thread = Thread { [self] in loop() }
        thread.name = "keel.amqp.consumer.\(queue)"
        thread.start()
    }

    /// Stops consuming; unacknowledged deliveries go back to the queue.
    public func stop() {
        state.withLock { $0.stopped = true }
    }

    public func ack(_ delivery: Delivery) { settle(delivery, .ack(delivery.message.deliveryTag)) }

    /// Rejects without requeue: the queue's dead-letter exchange gets the message.
    public func reject(_ delivery: Delivery) { settle(delivery, .reject(delivery.message.deliveryTag)) }

    private func settle(_ delivery: Delivery, _ settlement: Settlement) {
        state.withLock { $0.pending.append((delivery.generation, settlement)) }
    }

    private func loop() {
        var backoff = 0.2
        while !state.withLock({ $0.stopped }) {
            do {
                let connection = try AMQPConnection(url: url)
                try declare(connection)
                try connection.qos(prefetch: prefetch)
                try connection.consume(queue: queue)
                let generation = state.withLock { state in
                    state.generation += 1
                    state.pending.removeAll()
                    return state.generation
                }
                if generation > 1 { logger.info("consuming \(queue) again after reconnecting to \(url)") }
                backoff = 0.2
                while !state.withLock({ $0.stopped }) {
                    let settlements = state.withLock { state in
                        defer { state.pending.removeAll() }
                        return state.pending
                    }
                    for (from, settlement) in settlements where from == generation {
                        switch settlement {
                        case .ack(let tag): try connection.ack(tag)
                        case .reject(let tag): try connection.reject(tag)
                        }
                    }
                    if let message = try connection.next(timeout: 0.002) {
                        continuation.yield(Delivery(message: message, generation: generation))
                    }
                }
                // Settle what finished before the stop, then close.
                for (from, settlement) in state.withLock({ $0.pending }) where from == generation {
                    if case .ack(let tag) = settlement { try? connection.ack(tag) }
                }
                connection.close()
            } catch {
                if state.withLock({ $0.stopped }) { break }
                logger.warning("consumer of \(queue): \(error); reconnecting in \(backoff) s")
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 10)
            }
        }
        continuation.finish()
    }
}
