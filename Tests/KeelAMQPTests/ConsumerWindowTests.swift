import Foundation
import KeelTestKit
import Synchronization
import Testing

@testable import KeelAMQP

@Suite("A consumer's window against the real broker", .tags(.integration), .timeLimit(.minutes(1)))
struct ConsumerWindowTests {
    final class Received: Sendable {
        let deliveries = Mutex([AMQPConsumer.Delivery]())
    }

    /// ``AMQPConsumer/limit(to:)`` holds the unsettled deliveries to the limit: narrowed, no
    /// delivery comes until fewer are unsettled; widened, the room fills at once although a
    /// delivery is still unsettled (RabbitMQ cannot widen a consumer's window: a second consumer
    /// takes the room); at 0, nothing more comes.
    @Test func theWindowNarrowsAndWidensWhileDeliveriesAreUnsettled() async throws {
        let queue = try TestQueue("window")
        defer { queue.remove() }
        try publishNumbered(20, to: queue.name, on: queue.setup)
        let consumer = AMQPConsumer(url: queue.url, queue: queue.name, prefetch: 3, maxBatch: 20) { _ in }
        consumer.start()
        defer { consumer.stop() }
        let received = Received()
        let reader = Task {
            while let batch = await consumer.nextBatch() { received.deliveries.withLock { $0 += batch } }
        }
        defer { reader.cancel() }
        func delivered() -> Int { received.deliveries.withLock { $0.count } }
        /// Waits for `count` deliveries in all, then checks that no more come for a while.
        func expectDelivered(_ count: Int, _ comment: Comment) async throws {
            try await waitUntil(within: 5) { delivered() >= count }
            try await Task.sleep(for: .milliseconds(300))
            #expect(delivered() == count, comment)
        }
        func ack(_ index: Int) { consumer.ack(received.deliveries.withLock { $0[index] }) }

        try await expectDelivered(3, "the prefetch window")
        consumer.limit(to: 1)
        ack(0)
        ack(1)
        try await expectDelivered(3, "one still unsettled: the window of 1 is full")
        ack(2)
        try await expectDelivered(4, "none unsettled: one more")
        consumer.limit(to: 3)
        try await expectDelivered(6, "widened with one unsettled: two more at once")
        ack(3)
        try await expectDelivered(7, "the room an ack makes is filled")
        consumer.limit(to: 0)
        for index in 4..<7 { ack(index) }
        try await expectDelivered(7, "a window of 0 takes nothing")
        consumer.limit(to: 2)
        try await expectDelivered(9, "and opened again, it takes again")
    }
}
