import Foundation
import KeelAMQP
import KeelCore

/// Asks the coordinator whether this worker may run a republished task (docs/protocol.md, step
/// 0b), over one AMQP connection kept open between claims and consuming direct reply-to. Claims
/// are rare (only after a coordinator restart or a failed publish), so they go one at a time.
final class ClaimClient: @unchecked Sendable {
    private let url: AMQPURL
    private let topology: Topology
    private let lock = NSLock()
    /// Guarded by `lock`; opened on the first claim, dropped when it fails.
    private var connection: AMQPConnection?
    /// The worker's: an answer from an older coordinator epoch than its tasks or answers showed
    /// is skipped.
    private let epochs: EpochWatermark

    init(url: AMQPURL, topology: Topology, epochs: EpochWatermark) {
        self.url = url
        self.topology = topology
        self.epochs = epochs
    }

    /// True once the claim is recorded as the attempt's start, false when another copy started.
    /// Throws when no answer came within `timeout` seconds or the connection failed.
    /// `workflowId`: the claimed task's workflow, for ``Topology/reportRoute(workflowId:)``.
    func claim(_ claim: ActivityClaim, workflowId: String, timeout: Double = 30) async throws -> Bool {
        let route = topology.reportRoute(workflowId: workflowId)
        return try await offPool { try self.ask(claim, route: route, timeout: timeout) }
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        connection?.close()
        connection = nil
    }

    private func ask(_ claim: ActivityClaim, route: Route, timeout: Double) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        do {
            let message = try AMQPMessage.wire(.claim, claim, exchange: route.exchange, routingKey: route.routingKey)
            if let reply = try open().ask(message, timeout: timeout, epochs: epochs) { return reply.ok }
            throw WireError(
                message: "no answer to the claim of \(claim.runId)/\(claim.activityId)/\(claim.attempt) within \(Int(timeout)) s")
        } catch let error as AMQPError {
            connection?.close()
            connection = nil
            throw error
        }
    }

    /// The open connection, consuming direct reply-to; a new one if there is none.
    private func open() throws -> AMQPConnection {
        if let connection { return connection }
        let connection = try AMQPConnection(url: url)
        do {
            try topology.declare(on: connection)
            try connection.consume(queue: Topology.replyTo, noAck: true)
        } catch {
            connection.close()
            throw error
        }
        self.connection = connection
        return connection
    }
}
