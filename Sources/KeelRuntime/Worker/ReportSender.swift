import Foundation
import KeelAMQP
import KeelCore
import Synchronization

/// Sends a worker's reports (started, redelivered, heartbeat, result) to the coordinator. At most
/// `window` publishes wait for their confirms at a time; reports made meanwhile go out together
/// as one `reports` message, so under load one broker message carries many reports. A report
/// sent alone goes as its own type. The window is two so that a result is never held behind the
/// confirm of its own attempt's `started`.
final class ReportSender: Sendable {
    private struct Item: Sendable {
        var report: WorkerReport
        /// ``Topology/reportRoute(workflowId:)`` of the report's workflow.
        var route: Route
        var written: (@Sendable () -> Void)?
        var settled: @Sendable ((any Error)?) -> Void
    }

    private let publisher: AMQPPublisher
    private let window = 2
    private let state = Mutex((waiting: [Item](), inFlight: 0))

    init(publisher: AMQPPublisher) { self.publisher = publisher }

    /// Returns once the report is confirmed by the broker.
    func send(_ report: WorkerReport, workflowId: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            send(report, workflowId: workflowId) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// Sends without waiting: `written` is called once the report is on the connection,
    /// `settled` once the broker confirmed it (nil) or it could not be sent. Both are called on
    /// the publishing thread and must not block.
    func send(
        _ report: WorkerReport, workflowId: String, written: (@Sendable () -> Void)? = nil,
        settled: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let route = publisher.topology.reportRoute(workflowId: workflowId)
        let batch = state.withLock { state -> [Item] in
            state.waiting.append(Item(report: report, route: route, written: written, settled: settled))
            guard state.inFlight < window else { return [] }
            state.inFlight += 1
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        if !batch.isEmpty { publish(batch) }
    }

    /// Publishes `batch` (this counts as one of the window's publishes), then whatever waits.
    private func publish(_ batch: [Item]) {
        // One message per route: reports about workflows of different shards go apart.
        let messages: [AMQPMessage]
        do {
            messages = try Dictionary(grouping: batch, by: \.route).map { route, items in
                try WorkerReport.message(for: items.map(\.report), route: route)
            }
        } catch {
            for item in batch { item.settled(error) }
            return next()
        }
        publisher.publish(
            messages,
            written: { for item in batch { item.written?() } },
            settled: { [self] error in
                for item in batch { item.settled(error) }
                next()
            })
    }

    private func next() {
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
