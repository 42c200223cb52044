import Foundation
import KeelAMQP
import KeelCore
import Synchronization

/// Sends a worker's reports (started, heartbeat, result) to the coordinator. Reports made while
/// a send is in flight go out together as one `reports` message: under load, one broker message
/// carries many reports instead of one each. A report is sent alone as its own type otherwise.
final class ReportSender: Sendable {
    enum Report: Sendable {
        case started(ActivityStarted)
        case heartbeat(ActivityHeartbeat)
        case result(ActivityResult)
    }

    private let publisher: AMQPPublisher
    private let state = Mutex((waiting: [(report: Report, continuation: CheckedContinuation<Void, any Error>)](), sending: false))

    init(publisher: AMQPPublisher) { self.publisher = publisher }

    /// Returns once the report is confirmed by the broker.
    func send(_ report: Report) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let startSending = state.withLock { state in
                state.waiting.append((report, continuation))
                defer { state.sending = true }
                return !state.sending
            }
            if startSending { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state in
                defer { state.waiting.removeAll() }
                if state.waiting.isEmpty { state.sending = false }
                return state.waiting
            }
            guard !batch.isEmpty else { return }
            do {
                try await publish(batch.map(\.report))
                for item in batch { item.continuation.resume() }
            } catch {
                for item in batch { item.continuation.resume(throwing: error) }
            }
        }
    }

    private func publish(_ reports: [Report]) async throws {
        let exchange = publisher.topology.resultsExchange
        let key = Topology.resultsRoutingKey
        if reports.count == 1 {
            switch reports[0] {
            case .started(let body): return try await publisher.send(.started, body, exchange: exchange, routingKey: key)
            case .heartbeat(let body): return try await publisher.send(.heartbeat, body, exchange: exchange, routingKey: key)
            case .result(let body): return try await publisher.send(.result, body, exchange: exchange, routingKey: key)
            }
        }
        var started: [ActivityStarted] = [], heartbeats: [ActivityHeartbeat] = [], results: [ActivityResult] = []
        for report in reports {
            switch report {
            case .started(let body): started.append(body)
            case .heartbeat(let body): heartbeats.append(body)
            case .result(let body): results.append(body)
            }
        }
        try await publisher.send(
            .reports, ReportBatch(started: started, heartbeats: heartbeats, results: results), exchange: exchange, routingKey: key)
    }
}
