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
final class CoordinatorLease: Sendable {
    let queue: String
    let url: AMQPURL
    let namespace: String
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

    private init(queue: String, url: AMQPURL, namespace: String, connection: AMQPConnection) {
        self.queue = queue
        self.url = url
        self.namespace = namespace
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

    /// One try on a new connection: the connection when the lease was free, nil when another
    /// connection holds it; throws when the broker cannot be reached.
    private static func take(_ queue: String, url: AMQPURL) throws -> AMQPConnection? {
        let connection = try AMQPConnection(url: url, heartbeat: heartbeat)
        do {
            try connection.declareExclusiveQueue(queue)
            return connection
        } catch let error as AMQPError where "\(error)".contains("RESOURCE_LOCKED") {
            connection.close()
            return nil
        } catch {
            connection.close()
            throw error
        }
    }

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
        let queue = topology.namespace + ".coordinator"
        let deadline = Date().addingTimeInterval(grace)
        var announced = false
        while !stopped() {
            let attempt: CoordinatorLease? = try await offPool {
                try take(queue, url: url).map {
                    CoordinatorLease(queue: queue, url: url, namespace: topology.namespace, connection: $0)
                }
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
            while !Task.isCancelled {
                let retaken: AMQPConnection?
                do {
                    retaken = try await offPool { [queue, url] in try Self.take(queue, url: url) }
                } catch {
                    // The broker is still out of reach: try again.
                    try await Task.sleep(for: .seconds(double: interval))
                    continue
                }
                guard let retaken else {
                    logger.critical("another coordinator took namespace \(namespace) while this one was cut off: stopping")
                    throw Self.heldElsewhere(namespace, queue)
                }
                connection.withLock { $0 = retaken }
                confirmedAt.withLock { $0 = .now }
                logger.info("the lease on \(queue) is back: resuming")
                break
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
