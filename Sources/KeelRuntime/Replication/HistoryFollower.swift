import Foundation
import KeelAMQP
import KeelHistory
import Logging
import Metrics
import Synchronization

/// Reads the replicated history log into this coordinator's own history file: a standby follows
/// it while another coordinator is active, and every coordinator with replication catches up to
/// the end of it before it acts (``catchUp(epoch:)``).
///
/// The log is ordered; each transaction carries its number (`keel-seq`) and its writer's epoch
/// (`keel-epoch`). A transaction is applied when it is the next one this file lacks and its
/// epoch is not older than the newest seen: a coordinator that took over first puts a takeover
/// marker with its epoch in the log, so what a superseded coordinator (paused, cut off) writes
/// after it is ignored by every follower.
final class HistoryFollower: @unchecked Sendable {
    private struct State {
        var newestEpoch: Int64 = 0
        var awaitedMarker: String?
        var markerSeen: CheckedContinuation<Void, any Error>?
        var failure: (any Error)?
        var stopped = false
        var applied = 0
    }

    private let url: AMQPURL
    private let topology: Topology
    private let store: SQLiteHistoryStore
    private let logger: Logger
    private let state = Mutex(State())
    private let finished = DispatchSemaphore(value: 0)

    init(url: AMQPURL, topology: Topology, store: SQLiteHistoryStore, logger: Logger) {
        self.url = url
        self.topology = topology
        self.store = store
        self.logger = logger
    }

    /// Follows the log on a thread of its own until ``stop()``.
    func start() {
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "keel.history.follower"
        thread.start()
    }

    func stop() {
        state.withLock { $0.stopped = true }
        finished.wait()
    }

    /// Declares the log (a stream queue) if it is not there yet.
    static func declareLog(on connection: AMQPConnection, topology: Topology) throws {
        try connection.declareQueue(topology.historyStream, deadLetterExchange: nil, queueType: "stream")
    }

    /// The epoch the next active coordinator takes at least: above every epoch in the log so
    /// far and in the file.
    var newestEpoch: Int64 { state.withLock { $0.newestEpoch } }

    /// Puts a takeover marker with `epoch` at the end of the log (through `publisher`, with
    /// confirms) and returns once everything before it is applied: the previous coordinator
    /// published nothing after losing the lease that took effect, and what it published before
    /// is now in this file.
    func catchUp(epoch: Int64, publisher: AMQPPublisher) async throws {
        let marker = UUID().uuidString
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let failure = state.withLock { state -> (any Error)? in
                if let failure = state.failure { return failure }
                state.awaitedMarker = marker
                state.markerSeen = continuation
                return nil
            }
            if let failure { return continuation.resume(throwing: failure) }
            let message = AMQPMessage(
                exchange: "", routingKey: topology.historyStream, body: Data(), type: "history-takeover", messageId: marker,
                headers: ["keel-epoch": String(epoch)])
            publisher.publish([message]) { [self] error in
                if let error { endCatchUp(.failure(error)) }
            }
        }
    }

    /// Ends the wait of ``catchUp(epoch:publisher:)``: its marker was applied, or following
    /// failed (for good: later calls fail at once).
    private func endCatchUp(_ outcome: Result<Void, any Error>) {
        let waiting = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if case .failure(let error) = outcome { state.failure = state.failure ?? error }
            state.awaitedMarker = nil
            defer { state.markerSeen = nil }
            return state.markerSeen
        }
        waiting?.resume(with: outcome)
    }

    private func run() {
        var backoff = 0.2
        while !state.withLock({ $0.stopped }) {
            do {
                try follow()
                return
            } catch let error as StoreError {
                // The file does not fit the log: following further cannot help.
                logger.error("the standby stops following the history log: \(error)")
                endCatchUp(.failure(error))
                return
            } catch {
                logger.warning("following the history log \(topology.historyStream) failed: \(error); again in \(backoff) s")
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 2)
            }
        }
    }

    /// Consumes from where this file left off until stopped; applies in batches of what arrived.
    private func follow() throws {
        let connection = try AMQPConnection(url: url)
        defer { connection.close() }
        try Self.declareLog(on: connection, topology: topology)
        try connection.qos(prefetch: 1000)
        let position = try store.replicationPosition()
        try connection.consumeStream(queue: topology.historyStream, from: position.followedOffset.map { $0 + 1 })
        var seq = position.seq
        var reported = (seq: seq, at: ContinuousClock.now)
        logger.info("standby: following the history log \(topology.historyStream) from transaction \(seq)")
        while !state.withLock({ $0.stopped }) {
            var batch: [HistoryChange] = []
            var lastOffset: Int64?
            var lastTag: UInt64?
            var marker: String?
            var wait = 0.2
            while batch.count < 500, let delivery = try connection.next(timeout: wait) {
                wait = 0
                lastTag = delivery.deliveryTag
                guard let offset = delivery.headers["x-stream-offset"].flatMap(Int64.init) else { continue }
                lastOffset = offset
                let epoch = delivery.headers["keel-epoch"].flatMap(Int64.init) ?? 0
                if delivery.type == "history-takeover" {
                    state.withLock { $0.newestEpoch = max($0.newestEpoch, epoch) }
                    if delivery.messageId == state.withLock({ $0.awaitedMarker }) {
                        marker = delivery.messageId
                        break
                    }
                    continue
                }
                guard let changeSeq = delivery.headers["keel-seq"].flatMap(Int64.init) else { continue }
                let stale = state.withLock { state -> Bool in
                    if epoch < state.newestEpoch { return true }
                    state.newestEpoch = epoch
                    return false
                }
                if stale {
                    logger.warning(
                        "history log: transaction \(changeSeq) of epoch \(epoch) ignored, written after a newer coordinator took over"
                    )
                    continue
                }
                guard changeSeq > seq else { continue }
                // No format header: a coordinator from before formats were numbered, format 1.
                let format = delivery.headers["keel-log-format"].flatMap(Int.init) ?? 1
                batch.append(HistoryChange(seq: changeSeq, epoch: epoch, changeset: delivery.body, format: format))
                seq = changeSeq
            }
            if let lastOffset { try store.apply(batch, readThrough: lastOffset) }
            if !batch.isEmpty {
                state.withLock { $0.applied += batch.count }
                Gauge(label: "keel_history_log_transaction", dimensions: [("role", "standby")]).record(Double(seq))
                // A line every 30 s while it moves: the operator sees the standby keep up.
                if ContinuousClock.now - reported.at > .seconds(30) {
                    logger.info(
                        "standby: applied the history log up to transaction \(seq) (\(seq - reported.seq) since the last line)")
                    reported = (seq, .now)
                }
            }
            if let lastTag { try connection.ack(lastTag, multiple: true) }
            if marker != nil {
                endCatchUp(.success(()))
                return
            }
        }
    }

    /// Transactions applied since the follower started.
    var applied: Int { state.withLock { $0.applied } }
}
