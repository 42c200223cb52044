import Dispatch
import Foundation
import Logging
import Synchronization

/// Publishes with publisher confirms, windowed, on its own connection and thread: requests are
/// published as soon as they arrive while earlier ones still wait for their confirms, and each
/// caller resumes when all of its messages are confirmed (not one round trip per message, nor a
/// stop-and-wait per batch). After a lost connection it reconnects (re-declaring the topology)
/// and publishes what was unconfirmed again (at-least-once, like every Keel message).
public final class AMQPPublisher: @unchecked Sendable {
    /// Handed from the caller to the publishing thread, then touched only there.
    private final class Request: @unchecked Sendable {
        let messages: [AMQPMessage]
        let taskQueues: Set<String>
        /// Called once, when the messages were first written to the connection.
        var written: (@Sendable () -> Void)?
        let settled: @Sendable ((any Error)?) -> Void
        var attempts = 0
        var lastTag: UInt64 = 0
        var firstTag: UInt64 = 0
        var sentAt = Date()

        init(
            messages: [AMQPMessage], taskQueues: Set<String>, written: (@Sendable () -> Void)?,
            settled: @escaping @Sendable ((any Error)?) -> Void
        ) {
            self.messages = messages
            self.taskQueues = taskQueues
            self.written = written
            self.settled = settled
        }
    }

    private let url: AMQPURL
    public let topology: Topology
    private let logger: Logger
    /// How long a message may wait for its confirm before the connection is deemed broken
    /// (not while the broker says it blocks publishers).
    private let confirmTimeout: Double = 30
    private let waiting = Mutex((requests: [Request](), running: false, closed: false))
    /// Written by callers, polled by the publishing thread together with the socket, so the
    /// thread sleeps until there is a request to publish or a confirm to read.
    private let wakeup = Wakeup()
    private let finished = DispatchSemaphore(value: 0)
    // Touched only by the publishing thread.
    private var connection: AMQPConnection?
    private var declaredTaskQueues: Set<String> = []

    public init(url: AMQPURL, topology: Topology, logger: Logger = Logger(label: "keel.amqp")) {
        self.url = url
        self.topology = topology
        self.logger = logger
    }

    /// Publishes `messages` and returns once RabbitMQ confirmed all of them. Task queues named
    /// in `taskQueues` are declared first if this publisher has not declared them yet.
    public func publish(_ messages: [AMQPMessage], taskQueues: Set<String> = []) async throws {
        guard !messages.isEmpty else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            publish(messages, taskQueues: taskQueues) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// Publishes `messages` without waiting: `written` is called (on the publishing thread)
    /// once they are written to the connection, `settled` once RabbitMQ confirmed them all (nil)
    /// or they could not be published. Neither may block.
    public func publish(
        _ messages: [AMQPMessage], taskQueues: Set<String> = [], written: (@Sendable () -> Void)? = nil,
        settled: @escaping @Sendable ((any Error)?) -> Void
    ) {
        guard !messages.isEmpty else {
            written?()
            return settled(nil)
        }
        let request = Request(messages: messages, taskQueues: taskQueues, written: written, settled: settled)
        let (accepted, start) = waiting.withLock { waiting -> (Bool, Bool) in
            guard !waiting.closed else { return (false, false) }
            waiting.requests.append(request)
            defer { waiting.running = true }
            return (true, !waiting.running)
        }
        guard accepted else {
            return settled(AMQPError(.publishFailed, "the publisher to \(url) is closed"))
        }
        if start {
            let thread = Thread { [self] in run() }
            thread.name = "keel.amqp.publisher"
            thread.start()
        }
        wakeup.signal()
    }

    /// Publishes what was asked and settles what was confirmed until closed and idle.
    private func run() {
        var inFlight: [Request] = []
        var backoff = 0.2
        while true {
            let (arrived, closed) = waiting.withLock { waiting in
                defer { waiting.requests.removeAll() }
                return (waiting.requests, waiting.closed)
            }
            if closed && arrived.isEmpty && inFlight.isEmpty { break }
            // Not yet written. A request leaves it once written (for `inFlight`), so that a failure
            // half-way retries each request once: one in both lists used to be retried and
            // settled, so its caller was resumed twice (a crash) when it was confirmed later.
            var pending = arrived[...]
            do {
                let connection = try connected()
                while let request = pending.first {
                    for name in request.taskQueues where !declaredTaskQueues.contains(name) {
                        try topology.declareTaskQueue(name, on: connection)
                        declaredTaskQueues.insert(name)
                    }
                    request.firstTag = connection.lastPublishedTag + 1
                    for message in request.messages { try connection.publish(message) }
                    request.lastTag = connection.lastPublishedTag
                    request.sentAt = Date()
                    request.written?()
                    request.written = nil
                    inFlight.append(request)
                    pending = pending.dropFirst()
                }
                if inFlight.isEmpty {
                    wakeup.sleep(socket: nil, timeout: 1)
                    continue
                }
                if !connection.hasBufferedInput { wakeup.sleep(socket: connection.socketDescriptor, timeout: 1) }
                try connection.readConfirms(timeout: 0)
                while let first = inFlight.first, connection.isSettled(through: first.lastTag) {
                    inFlight.removeFirst()
                    if connection.takeRefusals(in: first.firstTag...first.lastTag) {
                        first.settled(AMQPError(.publishNotConfirmed, "RabbitMQ refused (nacked) a published message"))
                    } else {
                        first.settled(nil)
                    }
                }
                if let oldest = inFlight.first, -oldest.sentAt.timeIntervalSinceNow > confirmTimeout {
                    if connection.isBlocked {
                        logger.warning("RabbitMQ at \(url) still blocks publishing; \(inFlight.count) publish(es) wait for it")
                        oldest.sentAt = Date()
                    } else {
                        throw AMQPError(
                            .publishNotConfirmed,
                            "RabbitMQ at \(url) did not confirm a publish within \(Int(confirmTimeout)) s")
                    }
                }
                backoff = 0.2
            } catch {
                // Whatever was not confirmed is published again on a new connection, three tries each.
                connection?.close()
                connection = nil
                var retry: [Request] = []
                for request in inFlight + pending {
                    request.attempts += 1
                    if request.attempts >= 3 {
                        request.settled(error)
                    } else {
                        retry.append(request)
                    }
                }
                inFlight.removeAll()
                logger.warning(
                    "publish to \(url) failed: \(error); \(retry.isEmpty ? "gave up" : "retrying \(retry.count) publish(es) in \(backoff) s")"
                )
                waiting.withLock { $0.requests.insert(contentsOf: retry, at: 0) }
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 2)
            }
        }
        connection?.close()
        connection = nil
        finished.signal()
    }

    private func connected() throws -> AMQPConnection {
        if let connection { return connection }
        let connection = try AMQPConnection(url: url, logger: logger)
        try topology.declare(on: connection)
        try connection.enableConfirms()
        declaredTaskQueues = Set(Topology.standardTaskQueues)
        self.connection = connection
        return connection
    }

    /// Waits for what is in flight, then closes the connection. Later publishes fail; closing
    /// again does nothing.
    /// ``close()`` on a thread of its own, so an async caller never blocks Swift's cooperative
    /// pool while the publisher drains.
    public func closeOffPool() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                self.close()
                continuation.resume()
            }
        }
    }

    public func close() {
        let running = waiting.withLock { waiting in
            waiting.closed = true
            defer { waiting.running = false }  // a second close() returns at once
            return waiting.running
        }
        guard running else { return }
        wakeup.signal()
        if finished.wait(timeout: .now() + 15) == .timedOut {
            logger.warning("closing the publisher to \(url): publishes still unconfirmed after 15 s are abandoned")
        }
    }

}
