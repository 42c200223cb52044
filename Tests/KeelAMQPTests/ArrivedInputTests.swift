import Foundation
import KeelTestKit
import Testing

@testable import KeelAMQP

#if canImport(Glibc)
    import Glibc
#endif

/// A connection's thread reads its socket only when a `poll` found input there (or did not
/// look): the rest of a burst comes from what rabbitmq-c already read, and a wake-up by another
/// thread alone asks the socket nothing.
@Suite("Input read once per wake-up", .timeLimit(.minutes(1)))
struct ArrivedInputTests {
    /// Which of its ends woke a sleep: a signal alone says the socket has nothing; input on the
    /// socket, and a sleep that timed out, say it may have.
    @Test func aSleepSaysWhetherTheSocketMayHaveInput() throws {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        defer { for end in ends { _ = Glibc.close(end) } }
        let wakeup = Wakeup()

        wakeup.signal()
        #expect(!wakeup.sleep(socket: ends[0], timeout: 5))

        var byte: UInt8 = 1
        #expect(write(ends[1], &byte, 1) == 1)
        #expect(wakeup.sleep(socket: ends[0], timeout: 5))
        wakeup.signal()
        #expect(wakeup.sleep(socket: ends[0], timeout: 5), "a signal with input waiting")
        #expect(read(ends[0], &byte, 1) == 1)

        #expect(wakeup.sleep(socket: ends[0], timeout: 0.05), "timed out")
    }

    /// A burst that arrived before the read is taken with one read of the socket: every delivery
    /// after that comes from rabbitmq-c's buffer, an empty buffer answers nil at once, and what
    /// the broker sent meanwhile waits on the socket for the next `poll`.
    @Test func aBurstIsReadOffTheSocketOnceAndTheRestFromTheBuffer() throws {
        let test = try TestQueue("arrived")
        defer { test.remove() }
        try test.setup.enableConfirms()
        let count = 20
        try test.setup.corked {
            for index in 0..<count {
                try test.setup.publish(AMQPMessage(exchange: "", routingKey: test.name, body: Data("\(index)".utf8)))
            }
        }
        try test.setup.waitForConfirms()

        let consumer = try AMQPConnection(url: test.url)
        defer { consumer.close() }
        try consumer.qos(prefetch: count)
        try consumer.consume(queue: test.name)
        // The broker pushes the window at once: all of it is on the socket well within this, or
        // partly in rabbitmq-c's buffer already (read with the consume's reply).
        Thread.sleep(forTimeInterval: 0.2)
        var bodies: [String] = []
        var socketReads = 0
        var last: AMQPDelivery?
        while bodies.count < count {
            while let delivery = try consumer.nextBuffered() {
                bodies.append(String(decoding: delivery.body, as: UTF8.self))
                last = delivery
            }
            guard bodies.count < count else { break }
            #expect(Wakeup().sleep(socket: consumer.socketDescriptor, timeout: 5), "the rest waits on the socket")
            let delivery = try #require(try consumer.next(timeout: 0))
            bodies.append(String(decoding: delivery.body, as: UTF8.self))
            last = delivery
            socketReads += 1
        }
        #expect(bodies == (0..<count).map { "\($0)" })
        #expect(socketReads <= 1)
        #expect(!consumer.hasBufferedInput)
        #expect(try consumer.nextBuffered() == nil)
        try consumer.ack(try #require(last).deliveryTag, multiple: true)
    }
}
