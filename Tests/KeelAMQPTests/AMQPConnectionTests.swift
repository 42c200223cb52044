import Foundation
import Testing

@testable import KeelAMQP

@Suite("AMQP connection against the real broker", .tags(.integration), .timeLimit(.minutes(1)))
struct AMQPConnectionTests {
    @Test func publishWithConfirmsConsumeAndAck() throws {
        let url = try AMQPURL.fromEnvironment()
        let queue = "keel.test.\(UUID().uuidString.prefix(8))"
        let connection = try AMQPConnection(url: url)
        defer {
            try? connection.deleteQueue(queue)
            try? connection.deleteExchange("keel.test.x")
            connection.close()
        }
        try connection.declareExchange("keel.test.x", type: "direct")
        try connection.declareQueue(queue, deadLetterExchange: nil)
        try connection.bind(queue: queue, exchange: "keel.test.x", routingKey: queue)
        try connection.enableConfirms()
        for index in 0..<100 {
            try connection.publish(
                AMQPMessage(
                    exchange: "keel.test.x", routingKey: queue, body: Data("{\"n\":\(index)}".utf8),
                    type: "probe", messageId: "m\(index)", headers: ["keel-type": "probe"]))
        }
        try connection.waitForConfirms()
        #expect(try connection.messageCount(queue: queue) == 100)
        let consumer = try AMQPConnection(url: url)
        try consumer.qos(prefetch: 10)
        try consumer.consume(queue: queue)
        var bodies: [String] = []
        while bodies.count < 100, let delivery = try consumer.next(timeout: 2) {
            #expect(delivery.headers["keel-type"] == "probe")
            #expect(delivery.type == "probe")
            bodies.append(String(decoding: delivery.body, as: UTF8.self))
            try consumer.ack(delivery.deliveryTag)
        }
        #expect(bodies.first == "{\"n\":0}")
        #expect(bodies.count == 100)
        consumer.close()
        #expect(try connection.messageCount(queue: queue) == 0)
    }

    /// Publishes written corked all arrive, in order, and the socket is uncorked afterwards, also
    /// when the body throws (a corked socket holds small writes for up to 200 ms).
    @Test func corkedPublishesArriveInOrderAndTheCorkIsLifted() throws {
        let url = try AMQPURL.fromEnvironment()
        let queue = "keel.test.corked.\(UUID().uuidString.prefix(8))"
        let connection = try AMQPConnection(url: url)
        defer {
            try? connection.deleteQueue(queue)
            connection.close()
        }
        try connection.declareQueue(queue, deadLetterExchange: nil)
        try connection.enableConfirms()
        func isCorked() -> Bool {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(connection.socketDescriptor, Int32(IPPROTO_TCP), TCP_CORK, &value, &length)
            return value != 0
        }
        try connection.corked {
            #expect(isCorked())
            for index in 0..<50 {
                try connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: Data("\(index)".utf8)))
            }
        }
        #expect(!isCorked())
        try connection.waitForConfirms()
        struct Thrown: Error {}
        #expect(throws: Thrown.self) { try connection.corked { throw Thrown() } }
        #expect(!isCorked())
        var bodies: [String] = []
        while let delivery = try connection.get(queue: queue) {
            bodies.append(String(decoding: delivery.body, as: UTF8.self))
        }
        #expect(bodies == (0..<50).map { "\($0)" })
    }

    @Test func badURLsAndUnreachableBrokersSayWhatIsWrong() {
        #expect(throws: AMQPError.self) { try AMQPURL("http://x") }
        let error = #expect(throws: AMQPError.self) {
            try AMQPConnection(url: AMQPURL("amqp://guest:guest@127.0.0.1:1"), connectTimeout: 1)
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("cannot reach RabbitMQ at amqp://guest@127.0.0.1:1") == true)
    }
}

extension Tag {
    @Tag static var integration: Self
}
