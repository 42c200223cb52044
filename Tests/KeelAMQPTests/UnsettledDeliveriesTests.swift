import Foundation
import Testing

@testable import KeelAMQP

@Suite("Settling deliveries in few frames")
struct UnsettledDeliveriesTests {
    @Test func acksBelowTheLowestUnsettledTagFoldIntoOneMultipleAck() {
        var unsettled = UnsettledDeliveries()
        for tag: UInt64 in 1...6 { unsettled.delivered(tag) }
        // 4 is still being worked on: 1-3 fold, 5 goes alone.
        #expect(
            unsettled.frames(settling: [.ack(2), .ack(1), .ack(5), .ack(3)]) == [
                .ack(3, multiple: true), .ack(5, multiple: false)
            ])
        // 4 settles: it folds, and covers nothing settled twice (5 is acked already).
        #expect(unsettled.frames(settling: [.ack(4)]) == [.ack(4, multiple: true)])
        #expect(unsettled.frames(settling: [.ack(6)]) == [.ack(6, multiple: true)])
    }

    @Test func rejectsGoFirstAndOneByOne() {
        var unsettled = UnsettledDeliveries()
        for tag: UInt64 in 1...4 { unsettled.delivered(tag) }
        #expect(unsettled.frames(settling: [.ack(1), .reject(2), .ack(3)]) == [.reject(2), .ack(3, multiple: true)])
        #expect(unsettled.frames(settling: [.reject(4)]) == [.reject(4)])
    }

    @Test func aSettlementOfAnUnknownOrSettledTagSendsNothing() {
        var unsettled = UnsettledDeliveries()
        unsettled.delivered(1)
        #expect(unsettled.frames(settling: [.ack(1)]) == [.ack(1, multiple: true)])
        #expect(unsettled.frames(settling: [.ack(1), .reject(1), .ack(7), .ackThrough(1)]).isEmpty)
    }

    @Test func ackThroughSettlesEverythingUpToItsTag() {
        var unsettled = UnsettledDeliveries()
        for tag: UInt64 in 1...5 { unsettled.delivered(tag) }
        #expect(unsettled.frames(settling: [.ackThrough(3)]) == [.ack(3, multiple: true)])
        #expect(unsettled.frames(settling: [.ack(5)]) == [.ack(5, multiple: false)])
        #expect(unsettled.frames(settling: [.ack(4)]) == [.ack(4, multiple: true)])
    }
}

@Suite("Consumer settlements against the real broker", .tags(.integration), .timeLimit(.minutes(1)))
struct ConsumerSettlementTests {
    /// Acks in any order and rejects between them, folded into multiple acks, settle exactly
    /// what was asked: the rejected messages reach the dead-letter queue, the one left unsettled
    /// is delivered again after the consumer stops, and nothing else comes back.
    @Test func outOfOrderAcksAndRejectsSettleExactlyTheirDeliveries() async throws {
        let url = try AMQPURL.fromEnvironment()
        let queue = "keel.test.settle.\(UUID().uuidString.prefix(8))"
        let dead = queue + ".dead"
        let setup = try AMQPConnection(url: url)
        defer { setup.close() }
        try setup.declareExchange(dead, type: "fanout")
        try setup.declareQueue(dead, deadLetterExchange: nil)
        try setup.bind(queue: dead, exchange: dead, routingKey: "")
        try setup.declareQueue(queue, deadLetterExchange: dead)
        try publishNumbered(20, to: queue, on: setup)

        let consumer = AMQPConsumer(url: url, queue: queue, prefetch: 20, maxBatch: 20) { _ in }
        consumer.start()
        var deliveries: [AMQPConsumer.Delivery] = []
        while deliveries.count < 20, let batch = await consumer.nextBatch() { deliveries += batch }
        let byBody = Dictionary(uniqueKeysWithValues: deliveries.map { (String(decoding: $0.message.body, as: UTF8.self), $0) })
        // Keep "7" unsettled; reject 3 and 12; ack the rest in reverse order, in two rounds.
        for index in (8..<20).reversed() where index != 12 { consumer.ack(byBody["\(index)"]!) }
        consumer.reject(byBody["12"]!)
        try await Task.sleep(for: .milliseconds(100))
        consumer.reject(byBody["3"]!)
        for index in (0..<7).reversed() where index != 3 { consumer.ack(byBody["\(index)"]!) }
        try await waitUntil { try setup.messageCount(queue: dead) == 2 }
        consumer.stopDelivering()
        consumer.stop()

        try await waitUntil { try setup.messageCount(queue: queue) == 1 }
        let check = try AMQPConnection(url: url)
        defer { check.close() }
        try check.consume(queue: queue)
        let left = try #require(try check.next(timeout: 2))
        #expect(String(decoding: left.body, as: UTF8.self) == "7")
        try check.consume(queue: dead)
        var rejected: Set<String> = []
        while rejected.count < 2, let message = try check.next(timeout: 2) {
            rejected.insert(String(decoding: message.body, as: UTF8.self))
        }
        #expect(rejected == ["3", "12"])
        #expect(try check.next(timeout: 0.3) == nil)
        try setup.deleteQueue(queue)
        try setup.deleteQueue(dead)
    }
}
