import Foundation
import Synchronization
import Testing

@testable import KeelAMQP

@Suite("A consumer whose queue is deleted", .tags(.integration), .timeLimit(.minutes(1)))
struct DeletedQueueTests {
    final class Received: Sendable {
        let bodies = Mutex([String]())
    }

    /// Deleting a queue (an operator purging it the quick way) ends its consumers on the
    /// broker. Keel's connections ask to be told (`consumer_cancel_notify`): the consumer
    /// reconnects, declares the queue again and takes what is published to it from then on.
    /// Without the notice it went on waiting on a consumer that no longer existed, and a worker
    /// served nothing while it looked alive.
    @Test func theConsumerDeclaresItsQueueAgainAndGoesOn() async throws {
        let url = try AMQPURL.fromEnvironment()
        let queue = "keel.test.deleted.\(UUID().uuidString.prefix(8))"
        let admin = try AMQPConnection(url: url)
        defer { admin.close() }
        defer { try? admin.deleteQueue(queue) }
        let consumer = AMQPConsumer(url: url, queue: queue, prefetch: 10, maxBatch: 10) { connection in
            try connection.declareQueue(queue, deadLetterExchange: nil)
        }
        consumer.start()
        defer { consumer.stop() }
        let received = Received()
        let reader = Task {
            while let batch = await consumer.nextBatch() {
                for delivery in batch {
                    received.bodies.withLock { $0.append(String(decoding: delivery.message.body, as: UTF8.self)) }
                    consumer.ack(delivery)
                }
            }
        }
        defer { reader.cancel() }
        #expect(await consumer.consuming())
        try publishNumbered(1, to: queue, on: admin)
        try await waitUntil(within: 5) { received.bodies.withLock { $0 } == ["0"] }

        try admin.deleteQueue(queue)
        // Declared again by the consumer, and consumed: a message published to it now arrives.
        // (Each look on a connection of its own: a passive declare of a missing queue closes
        // the channel.)
        func consumers() -> Int? {
            guard let probe = try? AMQPConnection(url: url) else { return nil }
            defer { probe.close() }
            return try? probe.inspect(queue: queue).consumers
        }
        try await waitUntil(within: 10) { consumers() == 1 }
        try admin.publish(AMQPMessage(exchange: "", routingKey: queue, body: Data("after".utf8)))
        try admin.waitForConfirms()
        try await waitUntil(within: 5) { received.bodies.withLock { $0 }.last == "after" }
    }
}
