import Foundation
import KeelAMQP
import KeelCore

/// Asks the coordinator whether this worker may run a republished task (docs/protocol.md, step
/// 0b). The claim goes out through the worker's ``ReportSender``, on the channel of its reports,
/// so RabbitMQ queues it behind every report sent before it: the result of another copy of the
/// same attempt, which stands for that copy's start, cannot be overtaken by the claim. The answer
/// comes to a queue of this client's own (exclusive to one connection it keeps open between
/// claims). Claims are rare (only after a coordinator restart or a failed publish).
final class ClaimClient: @unchecked Sendable {
    private let url: AMQPURL
    private let topology: Topology
    private let worker: String
    private let lock = NSLock()
    /// Guarded by `lock`; opened on the first claim, dropped when it fails, with its queue.
    private var connection: AMQPConnection?
    private var queue: String?
    /// Guarded by `lock`: answers read while waiting for another claim's, by correlation id.
    private var answers: [String: JobReply] = [:]
    /// The worker's: an answer from an older coordinator epoch than its tasks or answers showed
    /// is skipped.
    private let epochs: EpochWatermark

    init(url: AMQPURL, topology: Topology, worker: String, epochs: EpochWatermark) {
        self.url = url
        self.topology = topology
        self.worker = worker
        self.epochs = epochs
    }

    /// True once the claim is recorded as the attempt's start, false when another copy started.
    /// Throws when it could not be sent, no answer came within `timeout` seconds or the
    /// connection failed. `workflowId`: the claimed task's workflow, for its route.
    func claim(
        _ claim: ActivityClaim, workflowId: String, through reports: ReportSender, timeout: Double = 30
    )
        async throws -> Bool
    {
        let queue = try await offPool { try self.answerQueue() }
        let correlation = UUID().uuidString
        try await reports.claim(claim, workflowId: workflowId, replyTo: queue, correlationId: correlation)
        guard let answer = try await offPool({ try self.answer(to: correlation, timeout: timeout) }) else {
            throw WireError(
                message: "no answer to the claim of \(claim.runId)/\(claim.activityId)/\(claim.attempt) within \(Int(timeout)) s")
        }
        return answer.ok
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        drop()
    }

    /// The queue answers come to, declared and consumed on the open connection (a new one if
    /// there is none).
    private func answerQueue() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        return try open().queue
    }

    /// Waits for the answer with `correlation` (nil: none within `timeout` seconds), keeping the
    /// answers to other claims it reads for their own waits.
    private func answer(to correlation: String, timeout: Double) throws -> JobReply? {
        lock.lock()
        defer { lock.unlock() }
        if let answer = answers.removeValue(forKey: correlation) { return answer }
        do {
            let connection = try open().connection
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                guard let delivery = try connection.next(timeout: 0.2), let id = delivery.correlationId,
                    let answer = try? Wire.decode(JobReply.self, from: delivery.body, what: "reply"),
                    !epochs.isStale(answer.coordinatorEpoch)
                else { continue }
                epochs.heard(answer.coordinatorEpoch)
                if id == correlation { return answer }
                // Only a few claims wait at once; answers nobody collects (their claim gave up
                // and asks again under another id) must not pile up.
                if answers.count >= 64 { answers.removeAll() }
                answers[id] = answer
            }
            return nil
        } catch let error as AMQPError {
            drop()
            throw error
        }
    }

    /// Holds `lock`.
    private func open() throws -> (connection: AMQPConnection, queue: String) {
        if let connection, let queue { return (connection, queue) }
        let connection = try AMQPConnection(url: url)
        // Under `<namespace>.control.`, where a worker's broker user may declare and read.
        let queue = topology.claimAnswersQueue(worker: worker)
        do {
            try topology.declare(on: connection)
            try connection.declareExclusiveQueue(queue)
            try connection.consume(queue: queue, noAck: true)
        } catch {
            connection.close()
            throw error
        }
        self.connection = connection
        self.queue = queue
        return (connection, queue)
    }

    /// Holds `lock`. Answers to the old queue are lost with it: their claims time out and ask again.
    private func drop() {
        connection?.close()
        connection = nil
        queue = nil
        answers.removeAll()
    }
}
