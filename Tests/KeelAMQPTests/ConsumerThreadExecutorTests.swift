import Foundation
import KeelTestKit
import Testing

@testable import KeelAMQP

/// A consumer that runs tasks: a loop over its batches that prefers its executor runs on the
/// consumer's own thread, and still runs to its end once that thread is gone.
@Suite("Tasks on a consumer's thread", .timeLimit(.minutes(1)))
struct ConsumerThreadExecutorTests {
    @Test func aLoopThatPrefersTheExecutorRunsOnTheConsumersThreadAndEndsAfterItStops() async throws {
        let test = try TestQueue("executor")
        defer { test.remove() }
        let (url, queue, setup) = (test.url, test.name, test.setup)
        try setup.enableConfirms()
        for index in 0..<3 { try setup.publish(AMQPMessage(exchange: "", routingKey: queue, body: Data("\(index)".utf8))) }
        try setup.waitForConfirms()

        let consumer = AMQPConsumer(url: url, queue: queue, prefetch: 10, maxBatch: 10, runsTasks: true) { _ in }
        consumer.start()
        let executor = try #require(consumer.executor)
        let loop = Task(executorPreference: executor) { () -> (onConsumer: [Bool], received: Int, after: Bool) in
            var onConsumer: [Bool] = []
            var received = 0
            while let batch = await consumer.nextBatch() {
                onConsumer.append(executor.isOnOwnThread)
                received += batch.count
                consumer.ackInOrder(batch)
                if received == 3 { consumer.stop() }
            }
            // The consumer's thread has ended: what the loop does next runs elsewhere.
            try? await Task.sleep(for: .milliseconds(20))
            return (onConsumer, received, executor.isOnOwnThread)
        }
        let (onConsumer, received, after) = await loop.value
        #expect(received == 3)
        #expect(!onConsumer.isEmpty && onConsumer.allSatisfy { $0 }, "\(onConsumer)")
        #expect(!after)
        try await waitUntil { try setup.messageCount(queue: queue) == 0 }
    }
}
