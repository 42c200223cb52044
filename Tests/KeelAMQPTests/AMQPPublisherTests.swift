import Foundation
import KeelAMQP
import KeelTestKit
import Synchronization
import Testing

// Three minutes: under the full suite, callers waiting for confirms are resumed seconds late, the
// cooperative pool being shared with other tests' blocking waits (alone the test takes under 1 s).
@Suite("Publisher against the real broker", .tags(.integration), .timeLimit(.minutes(3)))
struct AMQPPublisherTests {
    /// Callers write their messages themselves while the connection is free and leave them to the
    /// publisher's thread while it is busy: from many tasks at once, every message reaches the
    /// queue once, each caller's in its order, and every request is written once, then settled once.
    @Test func concurrentCallersAreEachWrittenAndConfirmedOnce() async throws {
        let test = try TestQueue("publish")
        defer { test.remove() }
        let (url, queue, setup) = (test.url, test.name, test.setup)
        let topology = Topology.forTest()
        defer { topology.remove(from: url) }
        let publisher = AMQPPublisher(url: url, topology: topology)
        let callers = 8
        let perCaller = 250
        let events = PublishEvents()
        await withTaskGroup(of: Void.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    for index in 0..<perCaller {
                        let name = "\(caller)-\(index)"
                        let message = AMQPMessage(exchange: "", routingKey: queue, body: Data(name.utf8))
                        // Every tenth request waits for its confirm; the rest go on at once.
                        let confirmation = PublishConfirmation()
                        publisher.publish(
                            [message],
                            written: { events.written(name) },
                            settled: { error in
                                events.settled(name)
                                confirmation.settle(error)
                            })
                        if index.isMultiple(of: 10) { try? await confirmation.wait() }
                    }
                }
            }
        }
        try await waitUntil { try setup.messageCount(queue: queue) == callers * perCaller }
        await publisher.closeOffPool()
        let (written, settled, ordered) = events.state.withLock { ($0.written, $0.settled, $0.writtenBeforeSettled) }
        #expect(written.count == callers * perCaller && written.values.allSatisfy { $0 == 1 })
        #expect(settled.count == callers * perCaller && settled.values.allSatisfy { $0 == 1 })
        #expect(ordered)

        // Each caller's messages arrive in the order it published them, none twice.
        try setup.consume(queue: queue)
        var next = [Int](repeating: 0, count: callers)
        for _ in 0..<(callers * perCaller) {
            let message = try #require(try setup.next(timeout: 5))
            let parts = String(decoding: message.body, as: UTF8.self).split(separator: "-").compactMap { Int($0) }
            #expect(parts.count == 2 && parts[1] == next[parts[0]])
            next[parts[0]] += 1
        }
        #expect(next == [Int](repeating: perCaller, count: callers))
    }

    /// A publisher that is closed refuses new messages at once, with the reason.
    @Test func aClosedPublisherRefusesAtOnce() async throws {
        let url = try AMQPURL.fromEnvironment()
        let topology = Topology.forTest()
        defer { topology.remove(from: url) }
        let publisher = AMQPPublisher(url: url, topology: topology)
        try await publisher.publish([AMQPMessage(exchange: "amq.fanout", routingKey: "", body: Data("one".utf8))])
        await publisher.closeOffPool()
        await #expect(throws: AMQPError.self) {
            try await publisher.publish([AMQPMessage(exchange: "amq.fanout", routingKey: "", body: Data("two".utf8))])
        }
    }
}

/// What the publisher called back, per message.
private final class PublishEvents: Sendable {
    let state = Mutex((written: [String: Int](), settled: [String: Int](), writtenBeforeSettled: true))

    func written(_ name: String) { state.withLock { $0.written[name, default: 0] += 1 } }

    func settled(_ name: String) {
        state.withLock { state in
            if state.written[name] != 1 { state.writtenBeforeSettled = false }
            state.settled[name, default: 0] += 1
        }
    }
}
