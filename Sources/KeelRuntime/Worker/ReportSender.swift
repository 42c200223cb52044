import Foundation
import KeelAMQP
import KeelCore
import Synchronization

/// Sends a worker's reports (started, redelivered, heartbeat, result) and claims to the
/// coordinator, in the order they are sent, on one channel. At most
/// `window` publishes wait for their confirms at a time; reports made meanwhile go out together
/// as one `reports` message, so under load one broker message carries many reports. A report
/// sent alone goes as its own type. The window is two so that a result is never held behind the
/// confirm of its own attempt's `started`.
final class ReportSender: Sendable {
    private struct Item: Sendable {
        var report: WorkerReport
        /// ``Topology/reportRoute(workflowId:)`` of the report's workflow.
        var route: Route
        /// A claim's: where its answer goes, and the id it comes back with.
        var answer: (queue: String, correlationId: String)?
        var written: (@Sendable () -> Void)?
        /// The task delivery to acknowledge once the report is confirmed.
        var acknowledging: (consumer: AMQPConsumer, delivery: AMQPConsumer.Delivery)? = nil
        var settled: @Sendable ((any Error)?) -> Void
    }

    private let publisher: AMQPPublisher
    private let window = 2
    private struct State {
        var waiting: [Item] = []
        var inFlight = 0
    }
    private let state = Mutex(State())
    /// Held while a batch is taken and handed to the publisher, which keeps the order it gets
    /// them in on the channel: so the batches go out in the order their reports were sent, even
    /// when two threads publish at once. Recursive: a closed publisher settles at once, and the
    /// settlement hands over what waits.
    private let order = NSRecursiveLock()

    init(publisher: AMQPPublisher) { self.publisher = publisher }

    /// Returns once the report is confirmed by the broker.
    func send(_ report: WorkerReport, workflowId: String) async throws {
        try await untilSettled { settled in send(report, workflowId: workflowId, settled: settled) }
    }

    /// Sends without waiting: `written` is called once the report is on the connection,
    /// `settled` once the broker confirmed it (nil) or it could not be sent. Both are called on
    /// the publishing thread and must not block. With `acknowledging`, that delivery is
    /// acknowledged before `settled` is called with nil, together with those of the other reports
    /// confirmed at the same time: a worker's acknowledgements then reach the broker as a few
    /// frames per confirmed batch instead of one each.
    func send(
        _ report: WorkerReport, workflowId: String, written: (@Sendable () -> Void)? = nil,
        acknowledging: (consumer: AMQPConsumer, delivery: AMQPConsumer.Delivery)? = nil,
        settled: @escaping @Sendable ((any Error)?) -> Void
    ) {
        enqueue(
            Item(
                report: report, route: publisher.topology.reportRoute(workflowId: workflowId), written: written,
                acknowledging: acknowledging, settled: settled))
    }

    /// Publishes a claim, with its answer to come to `replyTo` under `correlationId`, behind every
    /// report sent before it, on the same channel: RabbitMQ queues it after them, so a result
    /// that stands for the start of another copy of the attempt reaches the coordinator first.
    /// Returns once the claim is confirmed by the broker.
    func claim(_ claim: ActivityClaim, workflowId: String, replyTo: String, correlationId: String) async throws {
        let route = publisher.topology.reportRoute(workflowId: workflowId)
        try await untilSettled { settled in
            enqueue(
                Item(report: .claim(claim), route: route, answer: (replyTo, correlationId), written: nil, settled: settled))
        }
    }

    /// Calls `start` with a settlement callback and returns once it is called: at once with nil,
    /// throwing with an error.
    private func untilSettled(_ start: (@escaping @Sendable ((any Error)?) -> Void) -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            start { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    private func enqueue(_ item: Item) {
        order.lock()
        defer { order.unlock() }
        let batch = state.withLock { state -> [Item] in
            state.waiting.append(item)
            guard state.inFlight < window else { return [] }
            state.inFlight += 1
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        if !batch.isEmpty { publish(batch) }
    }

    /// Publishes `batch` (this counts as one of the window's publishes), then whatever waits.
    private func publish(_ batch: [Item]) {
        // One message per route: reports about workflows of different shards go apart. A claim
        // goes alone (it carries its answer's queue), after the other reports of its route.
        let messages: [AMQPMessage]
        do {
            messages = try Dictionary(grouping: batch, by: \.route).flatMap { route, items in
                let reports = items.filter { $0.answer == nil }.map(\.report)
                var messages = reports.isEmpty ? [] : [try WorkerReport.message(for: reports, route: route)]
                for item in items {
                    guard let answer = item.answer, case .claim(let claim) = item.report else { continue }
                    var message = try AMQPMessage.wire(.claim, claim, exchange: route.exchange, routingKey: route.routingKey)
                    message.replyTo = answer.queue
                    message.correlationId = answer.correlationId
                    messages.append(message)
                }
                return messages
            }
        } catch {
            for item in batch { item.settled(error) }
            return next()
        }
        publisher.publish(
            messages,
            written: { for item in batch { item.written?() } },
            settled: { [self] error in
                if error == nil { Self.acknowledge(batch) }
                for item in batch { item.settled(error) }
                next()
            })
    }

    /// Acknowledges the deliveries of `batch`'s reports, one call per consumer.
    private static func acknowledge(_ batch: [Item]) {
        for (_, deliveries) in Dictionary(grouping: batch.compactMap(\.acknowledging), by: { ObjectIdentifier($0.consumer) }) {
            deliveries[0].consumer.ack(deliveries.map(\.delivery))
        }
    }

    private func next() {
        order.lock()
        defer { order.unlock() }
        let batch = state.withLock { state -> [Item] in
            guard !state.waiting.isEmpty else {
                state.inFlight -= 1
                return []
            }
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        if !batch.isEmpty { publish(batch) }
    }
}
