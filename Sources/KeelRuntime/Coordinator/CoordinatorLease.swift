import Foundation
import KeelAMQP
import KeelCore
import Logging
import Synchronization

/// One active coordinator per namespace: the active one holds an exclusive queue,
/// `<namespace>.coordinator`, on a connection of its own. RabbitMQ lets one connection declare
/// an exclusive queue and deletes it when that connection closes (a clean stop, a crash, a
/// `kill -9`), so a second coordinator cannot take the namespace while the first is connected,
/// and can as soon as it is not. The holder checks every second that it still has the lease,
/// and stops when it has not (a broker restart, a network partition) before it acts again.
///
/// Each coordinator that takes the lease first records it in `<namespace>.coordinator-holder`
/// (a queue that keeps its newest message only), on the lease connection, confirmed. A
/// coordinator that takes the lease back after losing it reads that record: when it names
/// another coordinator, that one took over meanwhile, and this one stops even though the lease
/// happened to be free (the other one's connection dropped for a moment).
final class CoordinatorLease: Sendable {
    let queue: String
    let url: AMQPURL
    let namespace: String
    let topology: Topology
    /// This coordinator's mark in the holder record.
    let token: String
    /// The connection that holds the lease; nil while it is being taken back.
    private let connection: Mutex<AMQPConnection?>
    /// When the broker last said the lease is this coordinator's.
    private let confirmedAt = Mutex(ContinuousClock.now)
    /// One use of the lease connection at a time: the watch's and ``confirmFresh(maxAge:)``'s
    /// looks, and its close. Each of them closes a connection it found gone while the other may be
    /// looking at it, and rabbitmq-c used on a closed connection aborts the process (seen in the
    /// paused-coordinator test). True once ``release()`` closed the lease.
    private let using = Mutex(false)
    /// Set when ``confirmFresh(maxAge:)`` found the lease gone: the watch looks at once.
    private let lookNow = Mutex(false)

    private init(url: AMQPURL, topology: Topology, token: String, connection: AMQPConnection) {
        queue = topology.coordinatorLeaseQueue
        self.url = url
        namespace = topology.namespace
        self.topology = topology
        self.token = token
        self.connection = Mutex(connection)
    }

    /// Returns at once when the broker confirmed the lease within `maxAge` (the watch does every
    /// second); else asks it now. A lease that is gone (the process was paused or cut off for
    /// longer than the broker's heartbeat timeout, and a standby may have taken over) is handed
    /// to the watch at once, and this waits until it is taken back; when another coordinator
    /// holds it, the watch stops this one and the wait ends with it. With a history of its own (the
    /// replicated log), a coordinator calls this before anything leaves it: a commit to its own
    /// file cannot find a later epoch there.
    func confirmFresh(maxAge: Duration = .milliseconds(1500)) async throws {
        if ContinuousClock.now - confirmedAt.withLock({ $0 }) <= maxAge { return }
        let current = connection.withLock { $0 }
        let held = try? await offPool { [self] in try look(at: current) }
        if held != nil {
            confirmedAt.withLock { $0 = .now }
            return
        }
        connection.withLock { held in if held === current { held = nil } }
        close(current)
        lookNow.withLock { $0 = true }
        try await waitUntilHeld()
    }

    /// Whether this coordinator holds the lease now. Its timers, schedules, stall checks and
    /// retention wait while it does not.
    var isHeld: Bool { connection.withLock { $0 != nil } }

    /// Returns at once while the lease is held; while it is being taken back, waits: without
    /// it another coordinator may be taking over, so nothing may be written.
    func waitUntilHeld() async throws {
        while !isHeld { try await Task.sleep(for: .milliseconds(100)) }
    }

    /// What one try to take the lease found.
    private enum Take {
        /// The lease was free: this connection holds it now.
        case taken(AMQPConnection)
        /// Another connection holds it; the holder record names `recordedHolder`.
        case heldElsewhere(recordedHolder: String?)
    }

    /// One try on a new connection; throws when the broker cannot be reached.
    private static func take(_ topology: Topology, url: AMQPURL) throws -> Take {
        let holder = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        let connection = try AMQPConnection(
            url: url, heartbeat: heartbeat, name: "keel coordinator lease \(topology.namespace) \(holder)")
        do {
            try connection.declareExclusiveQueue(topology.coordinatorLeaseQueue)
            return .taken(connection)
        } catch let error as AMQPError where "\(error)".contains("RESOURCE_LOCKED") {
            defer { connection.close() }
            try connection.reopenChannel()
            return .heldElsewhere(recordedHolder: try recordedHolder(on: connection, topology))
        } catch {
            connection.close()
            throw error
        }
    }

    /// Records on the lease connection that this coordinator took the lease: the broker confirms
    /// it only while the connection, and so the lease, is there.
    private static func recordHolder(_ token: String, on connection: AMQPConnection, _ topology: Topology) throws {
        try declareHolderQueue(on: connection, topology)
        let record: [String: String] = [
            "holder": "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)", "lease": token,
            "takenAt": ISO8601DateFormatter().string(from: Date())
        ]
        try connection.enableConfirms()
        try connection.publish(
            AMQPMessage(
                exchange: "", routingKey: topology.leaseHolderQueue, body: try JSONEncoder().encode(record),
                type: "coordinator-lease", messageId: token))
        try connection.waitForConfirms(timeout: 10)
    }

    /// The mark of the coordinator that recorded the lease last; nil when none did (the record
    /// is gone with the broker's data). Leaves the record in place. Another coordinator may be
    /// reading it at the same moment (it is theirs until they put it back), so an empty queue is
    /// looked at again for a second before it counts as empty.
    private static func recordedHolder(on connection: AMQPConnection, _ topology: Topology) throws -> String? {
        try declareHolderQueue(on: connection, topology)
        for _ in 0..<5 {
            if let record = try connection.get(queue: topology.leaseHolderQueue) {
                try connection.reject(record.deliveryTag, requeue: true)
                return record.messageId ?? ""
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return nil
    }

    private static func declareHolderQueue(on connection: AMQPConnection, _ topology: Topology) throws {
        try connection.declareQueue(
            topology.leaseHolderQueue, deadLetterExchange: nil, queueType: topology.queueTypeArgument, maxLength: 1)
    }

    /// How long a coordinator that lost its lease waits for a holder that took it without
    /// recording a takeover (a coordinator it superseded, which lets go once it reads the
    /// record) before it stops.
    static let supersededHolderGrace: Duration = .seconds(10)

    /// The lease connection's AMQP heartbeat, seconds (`KEEL_LEASE_HEARTBEAT`, default 10): the
    /// broker drops the lease of a coordinator that stopped answering (paused, cut off) after
    /// about two of them, and a standby takes over.
    static let heartbeat = ProcessInfo.processInfo.environment["KEEL_LEASE_HEARTBEAT"].flatMap(Int.init).map { max($0, 1) } ?? 10

    static func heldElsewhere(_ namespace: String, _ queue: String) -> CoordinatorLeaseError {
        CoordinatorLeaseError(
            message:
                "another coordinator is active on namespace \(namespace) (it holds the queue \(queue)): two would both write. Stop it, run this one with --standby to take over when it goes, or give this one its own KEEL_NAMESPACE"
        )
    }

    /// Takes the lease. When another coordinator holds it: waits for it as a standby, or gives
    /// up after `grace` seconds (a previous coordinator's connection may still be closing).
    static func acquire(
        url: AMQPURL, topology: Topology, standby: Bool, grace: Double = 5, logger: Logger, stopped: @Sendable () -> Bool
    ) async throws -> CoordinatorLease? {
        let queue = topology.coordinatorLeaseQueue
        let deadline = Date().addingTimeInterval(grace)
        var announced = false
        while !stopped() {
            let attempt: CoordinatorLease? = try await offPool {
                guard case .taken(let connection) = try take(topology, url: url) else { return nil }
                let token = UUID().uuidString
                do {
                    try recordHolder(token, on: connection, topology)
                } catch {
                    connection.close()
                    throw error
                }
                return CoordinatorLease(url: url, topology: topology, token: token, connection: connection)
            }
            if let attempt {
                if announced { logger.info("standby: the namespace \(topology.namespace) is free; taking over") }
                return attempt
            }
            if standby {
                if !announced {
                    logger.info(
                        "standby: another coordinator is active on namespace \(topology.namespace); waiting to take over")
                    announced = true
                }
            } else if Date() >= deadline {
                throw heldElsewhere(topology.namespace, queue)
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        return nil
    }

    /// Checks every `interval` seconds that the lease is still held. When its connection is
    /// gone (a broker restart, a partition), the coordinator's own writes wait (``isHeld`` is
    /// false) while the lease is taken back on a new connection; throws, to stop the coordinator,
    /// when another coordinator has taken it meanwhile. Cancelled when the coordinator stops.
    func watch(interval: Double = 1, logger: Logger) async throws {
        while !Task.isCancelled {
            var waited = 0.0
            while waited < interval, !lookNow.withLock({ $0 }) {
                try await Task.sleep(for: .milliseconds(50))
                waited += 0.05
            }
            let current = connection.withLock { $0 }
            let held = try? await offPool { [self] in try look(at: current) }
            if held != nil {
                confirmedAt.withLock { $0 = .now }
                continue
            }
            connection.withLock { $0 = nil }
            lookNow.withLock { $0 = false }
            close(current)
            logger.warning(
                "the lease on \(queue) is gone with its broker connection; pausing this coordinator's writes to take it back")
            try await takeBack(interval: interval, logger: logger)
        }
    }

    /// Takes the lease back after its connection was lost, unless another coordinator took it
    /// over meanwhile (the holder record names it): then throws, to stop this one.
    private func takeBack(interval: Double, logger: Logger) async throws {
        var heldBySuperseded: ContinuousClock.Instant?
        while !Task.isCancelled {
            let taken: Take
            do {
                taken = try await offPool { [topology, url] in try Self.take(topology, url: url) }
            } catch {
                // The broker is still out of reach: try again.
                try await Task.sleep(for: .seconds(double: interval))
                continue
            }
            switch taken {
            case .taken(let retaken):
                let recorded: String?
                do {
                    recorded = try await offPool { [topology] in try Self.recordedHolder(on: retaken, topology) }
                    if recorded == nil {
                        logger.warning(
                            "the lease holder record \(topology.leaseHolderQueue) is gone (the broker lost its data?): recording this coordinator again"
                        )
                        try await offPool { [token, topology] in try Self.recordHolder(token, on: retaken, topology) }
                    }
                } catch {
                    retaken.close()
                    try await Task.sleep(for: .seconds(double: interval))
                    continue
                }
                if let recorded, recorded != token {
                    retaken.close()
                    logger.critical(
                        "another coordinator took namespace \(namespace) while this one was cut off (it recorded its takeover in \(topology.leaseHolderQueue)): stopping"
                    )
                    throw Self.heldElsewhere(namespace, queue)
                }
                connection.withLock { $0 = retaken }
                confirmedAt.withLock { $0 = .now }
                logger.info("the lease on \(queue) is back: resuming")
                return
            case .heldElsewhere(let recorded) where recorded == token:
                // The holder took the lease without recording a takeover: a coordinator this one
                // superseded (it reads the record and lets go), or one that is recording it now.
                let since = heldBySuperseded ?? .now
                heldBySuperseded = since
                if ContinuousClock.now - since > Self.supersededHolderGrace {
                    logger.critical(
                        "another coordinator has held namespace \(namespace) for \(Self.supersededHolderGrace) without recording a takeover: stopping"
                    )
                    throw Self.heldElsewhere(namespace, queue)
                }
                try await Task.sleep(for: .seconds(double: interval))
            case .heldElsewhere:
                logger.critical("another coordinator took namespace \(namespace) while this one was cut off: stopping")
                throw Self.heldElsewhere(namespace, queue)
            }
        }
    }

    /// Whether the lease queue is still there on `current` (throws when not, or when the
    /// connection is gone).
    /// (`current` is looked at only while it is still the lease connection, and so not closed:
    /// the one who closes it first takes it away.)
    private func look(at current: AMQPConnection?) throws -> (messages: Int, consumers: Int)? {
        try using.withLock { released in
            guard !released, let current, connection.withLock({ $0 === current }) else {
                throw AMQPError(.connectionLost, "the lease connection was closed")
            }
            return try current.inspect(queue: queue)
        }
    }

    /// Closes `current`, no longer the lease connection, once no look uses it.
    private func close(_ current: AMQPConnection?) {
        using.withLock { _ in current?.close() }
    }

    func release() {
        using.withLock { released in
            released = true
            connection.withLock { $0 }?.close()
        }
    }
}

/// Another coordinator holds the namespace, or this one lost it.
public struct CoordinatorLeaseError: KeelError {
    public var message: String
    public var errorType: String { "CoordinatorLease" }
    public var isNonRetryable: Bool { true }
}
