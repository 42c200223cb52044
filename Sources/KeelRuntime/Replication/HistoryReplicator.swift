import Foundation
import KeelAMQP
import KeelHistory
import Logging
import Metrics
import Synchronization

/// The active coordinator's side of the replicated history: each committed write transaction's
/// changes go to the log (the namespace's history stream) with publisher confirms, in commit
/// order, and nothing a transaction caused may leave the coordinator (tasks, acknowledgements,
/// replies) before the log confirmed it: ``confirmed()`` waits for that.
final class HistoryReplicator: HistoryChangeSink, @unchecked Sendable {
    private struct State {
        var recorded: Int64 = 0
        var confirmed: Int64 = 0
        var failure: (any Error)?
        var waiters: [(target: Int64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    private let publisher: AMQPPublisher
    private let stream: String
    private let state = Mutex(State())

    init(publisher: AMQPPublisher, topology: Topology) {
        self.publisher = publisher
        stream = topology.historyStream
    }

    var confirmedThrough: Int64 { state.withLock { $0.confirmed } }

    func record(_ change: HistoryChange) {
        state.withLock { $0.recorded = max($0.recorded, change.seq) }
        publisher.publish([Self.message(change, stream: stream)]) { [self] error in settle(change.seq, error) }
    }

    /// Publishes again, in order, what a crash left unconfirmed; followers skip what they hold.
    func republish(_ changes: [HistoryChange]) async throws {
        guard let last = changes.last else { return }
        state.withLock { $0.recorded = max($0.recorded, last.seq) }
        try await publisher.publish(changes.map { Self.message($0, stream: stream) })
        settle(last.seq, nil)
    }

    static func message(_ change: HistoryChange, stream: String) -> AMQPMessage {
        var headers = ["keel-seq": String(change.seq), "keel-log-format": String(change.format)]
        if let epoch = change.epoch { headers["keel-epoch"] = String(epoch) }
        return AMQPMessage(exchange: "", routingKey: stream, body: change.changeset, type: "history-change", headers: headers)
    }

    /// Returns once the log confirmed every transaction recorded so far; throws once publishing
    /// to the log failed for good (nothing more may leave: the coordinator stops).
    func confirmed() async throws {
        // Nil: confirmed already (the usual case on every acknowledgement): no continuation.
        let target = try state.withLock { state -> Int64? in
            if let failure = state.failure { throw failure }
            return state.confirmed >= state.recorded ? nil : state.recorded
        }
        guard let target else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ready: Result<Void, any Error>? = state.withLock { state in
                if let failure = state.failure { return .failure(failure) }
                if state.confirmed >= target { return .success(()) }
                state.waiters.append((target, continuation))
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    private func settle(_ seq: Int64, _ error: (any Error)?) {
        let resumed = state.withLock { state -> [(CheckedContinuation<Void, any Error>, (any Error)?)] in
            if let error {
                state.failure = state.failure ?? AMQPError(.publishFailed, "replicating the history to the log failed: \(error)")
                defer { state.waiters.removeAll() }
                return state.waiters.map { ($0.continuation, state.failure) }
            }
            // After a failure nothing counts as confirmed: the transaction that failed stays in
            // the outbox, for the next start to publish.
            guard state.failure == nil else { return [] }
            state.confirmed = max(state.confirmed, seq)
            Gauge(label: "keel_history_log_transaction", dimensions: [("role", "active")]).record(Double(state.confirmed))
            let confirmed = state.confirmed
            let done = state.waiters.filter { $0.target <= confirmed }
            state.waiters.removeAll { $0.target <= confirmed }
            return done.map { ($0.continuation, nil) }
        }
        for (continuation, error) in resumed {
            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
        }
    }
}
