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
        /// Its place in the order of ``send(_:workflowId:written:settled:)`` calls.
        var number: UInt64
        var report: WorkerReport
        /// ``Topology/reportRoute(workflowId:)`` of the report's workflow.
        var route: Route
        var written: (@Sendable () -> Void)?
        var settled: @Sendable ((any Error)?) -> Void
    }

    private let publisher: AMQPPublisher
    private let window = 2
    private struct State {
        var waiting: [Item] = []
        var inFlight = 0
        /// Reports sent so far, and those of them not settled yet.
        var sent: UInt64 = 0
        var unsettled: Set<UInt64> = []
        /// ``settledSoFar()`` callers: each waits for the reports up to its number.
        var waiters: [(through: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state = Mutex(State())

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
            state.sent += 1
            state.unsettled.insert(state.sent)
            state.waiting.append(Item(number: state.sent, report: report, route: route, written: written, settled: settled))
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
            finish(batch, error)
            return next()
        }
        publisher.publish(
            messages,
            written: { for item in batch { item.written?() } },
            settled: { [self] error in
                finish(batch, error)
                next()
            })
    }

    /// Returns once every report sent before this call is confirmed or failed. A claim waits for
    /// it: a claim goes on a connection of its own, and without the wait it could reach the
    /// coordinator ahead of this worker's result for another copy of the same attempt.
    func settledSoFar() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard !state.unsettled.isEmpty else { return true }
                state.waiters.append((state.sent, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Settles `batch` (nil: confirmed), then resumes the ``settledSoFar()`` callers that waited
    /// for nothing later.
    private func finish(_ batch: [Item], _ error: (any Error)?) {
        for item in batch { item.settled(error) }
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            for item in batch { state.unsettled.remove(item.number) }
            // Claims are rare: most settlements have nobody to look for.
            guard !state.waiters.isEmpty else { return [] }
            let oldest = state.unsettled.min() ?? .max
            let ready = state.waiters.filter { $0.through < oldest }
            state.waiters.removeAll { $0.through < oldest }
            return ready.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
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
