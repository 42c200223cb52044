import Dispatch
import Foundation
import Logging
import Synchronization

/// Publishes with publisher confirms, windowed, on its own connection: requests are published
/// as soon as they arrive while earlier ones still wait for their confirms, and each caller
/// resumes when all of its messages are confirmed (not one round trip per message, nor a
/// stop-and-wait per batch). A caller writes its messages itself when the connection is free; a
/// thread of the publisher's own reads the confirms, and connects, writes what callers left to it
/// and publishes again after a failure. After a lost connection it reconnects (re-declaring the topology)
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
    /// Requests for the publishing thread: those a caller could not write itself (the thread was
    /// connecting or reading, or requests wait before them), and those to publish again.
    private let waiting = Mutex((requests: [Request](), running: false, closed: false))
    /// Written by callers, polled by the publishing thread together with the socket, so the
    /// thread sleeps until there is a request to publish or a confirm to read.
    private let wakeup = Wakeup()
    private let finished = DispatchSemaphore(value: 0)
    /// Held while the connection is used: by the publishing thread to connect, write what waits
    /// and read confirms, and by a caller that writes its own request. A caller only tries it, so
    /// it never waits for a connect or blocks Swift's cooperative pool.
    private let line = NSLock()
    // Guarded by `line`.
    private var connection: AMQPConnection?
    private var declaredTaskQueues: Set<String> = []
    /// Written, waiting for their confirms, oldest first.
    private var inFlight: [Request] = []
    /// Why a caller's write failed: the thread then reconnects and publishes again.
    private var broken: (any Error)?
    /// Requests a caller writes itself while this many wait for their confirms (beyond: the
    /// broker is slow or blocked, and the thread takes over).
    private let inFlightForDirectWrites = 256

    public init(url: AMQPURL, topology: Topology, logger: Logger = Logger(label: "keel.amqp")) {
        self.url = url
        self.topology = topology
        self.logger = logger
    }

    /// Publishes `messages` and returns once RabbitMQ confirmed all of them. Task queues named
    /// in `taskQueues` are declared first if this publisher has not declared them yet.
    public func publish(_ messages: [AMQPMessage], taskQueues: Set<String> = []) async throws {
        guard !messages.isEmpty else { return }
        try await send(messages, taskQueues: taskQueues).wait()
    }

    /// Publishes `messages` without waiting (written before it returns when the connection is
    /// free) and returns the wait for their confirms.
    public func send(_ messages: [AMQPMessage], taskQueues: Set<String> = []) -> PublishConfirmation {
        let confirmation = PublishConfirmation()
        publish(messages, taskQueues: taskQueues) { confirmation.settle($0) }
        return confirmation
    }

    /// Publishes `messages` without waiting: `written` is called once they are written to the
    /// connection (on the caller's thread when it could write them itself, else on the
    /// publishing thread), `settled` once RabbitMQ confirmed them all (nil) or they could not be
    /// published (on the publishing thread, or the caller's when the publisher is closed), never
    /// before `written` unless they were never written. Neither may block; `written` may be
    /// called while the connection is held, and a publish it makes goes through the thread.
    ///
    /// The caller writes the messages itself when the connection is free and nothing waits
    /// before them: handing them to the publishing thread cost a wake-up and a hand-over between
    /// threads for every message, on the path of every step.
    public func publish(
        _ messages: [AMQPMessage], taskQueues: Set<String> = [], written: (@Sendable () -> Void)? = nil,
        settled: @escaping @Sendable ((any Error)?) -> Void
    ) {
        guard !messages.isEmpty else {
            written?()
            return settled(nil)
        }
        let request = Request(messages: messages, taskQueues: taskQueues, written: written, settled: settled)
        if writeDirectly(request) { return }
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

    /// Writes `request` on the caller's thread if the connection is up, free, not blocked by the
    /// broker, and no request waits for the thread (which would then go after this one). Returns
    /// false if it left the request to the thread.
    private func writeDirectly(_ request: Request) -> Bool {
        guard line.try() else { return false }
        guard let connection, broken == nil, !connection.isBlocked, inFlight.count < inFlightForDirectWrites,
            request.taskQueues.isSubset(of: declaredTaskQueues),
            waiting.withLock({ $0.running && !$0.closed && $0.requests.isEmpty })
        else {
            line.unlock()
            return false
        }
        do {
            // Called before `line` is released: the thread may settle the request as soon as it is.
            try write(request, on: connection)?()
        } catch {
            // Publishing again is the thread's: it finds the request in flight and the connection broken.
            broken = error
            inFlight.append(request)
        }
        let failed = broken != nil
        line.unlock()
        if failed { wakeup.signal() }
        return true
    }

    /// Writes `request` and puts it in flight; returns its `written` callback, to be called
    /// before the request can be settled. Holds `line`.
    private func write(_ request: Request, on connection: AMQPConnection) throws -> (@Sendable () -> Void)? {
        for name in request.taskQueues where !declaredTaskQueues.contains(name) {
            try topology.declareTaskQueue(name, on: connection)
            declaredTaskQueues.insert(name)
        }
        request.firstTag = connection.lastPublishedTag + 1
        try connection.corked(if: request.messages.count > 1) {
            for message in request.messages { try connection.publish(message) }
        }
        request.lastTag = connection.lastPublishedTag
        request.sentAt = Date()
        inFlight.append(request)
        defer { request.written = nil }
        return request.written
    }

    /// Publishes what was handed over and settles what was confirmed until closed and idle.
    private func run() {
        var backoff = 0.2
        // Whether the socket may have input: false only after a wake-up by a caller alone.
        var readable = true
        while true {
            var written: [@Sendable () -> Void] = []
            var settled: [(Request, (any Error)?)] = []
            var pause: Double?
            var sleepOn: Int32?
            line.lock()
            // Taken while holding `line`, so that no caller writes ahead of them.
            let (arrived, closed) = waiting.withLock { waiting in
                defer { waiting.requests.removeAll() }
                return (waiting.requests, waiting.closed)
            }
            if closed && arrived.isEmpty && inFlight.isEmpty {
                line.unlock()
                break
            }
            // Not yet written. A request leaves it once written (for `inFlight`), so that a failure
            // half-way retries each request once: one in both lists used to be retried and
            // settled, so its caller was resumed twice (a crash) when it was confirmed later.
            var pending = arrived[...]
            do {
                if let error = broken {
                    broken = nil
                    throw error
                }
                let connection = try connected()
                while let request = pending.first {
                    if let callback = try write(request, on: connection) { written.append(callback) }
                    pending = pending.dropFirst()
                }
                try connection.readArrived(socketReadable: readable)
                while let first = inFlight.first, connection.isSettled(through: first.lastTag) {
                    inFlight.removeFirst()
                    let refused = connection.takeRefusals(in: first.firstTag...first.lastTag)
                    settled.append(
                        (first, refused ? AMQPError(.publishNotConfirmed, "RabbitMQ refused (nacked) a published message") : nil))
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
                // The socket is watched even with nothing in flight: a caller may write at any time.
                sleepOn = connection.hasBufferedInput ? nil : connection.socketDescriptor
                backoff = 0.2
            } catch {
                // Whatever was not confirmed is published again on a new connection, three tries each.
                connection?.close()
                connection = nil
                var retry: [Request] = []
                for request in inFlight + pending {
                    request.attempts += 1
                    if request.attempts >= 3 {
                        settled.append((request, error))
                    } else {
                        retry.append(request)
                    }
                }
                inFlight.removeAll()
                logger.warning(
                    "publish to \(url) failed: \(error); \(retry.isEmpty ? "gave up" : "retrying \(retry.count) publish(es) in \(backoff) s")"
                )
                waiting.withLock { $0.requests.insert(contentsOf: retry, at: 0) }
                pause = backoff
                backoff = min(backoff * 2, 2)
            }
            line.unlock()
            for callback in written { callback() }
            for (request, error) in settled { request.settled(error) }
            if let pause {
                Thread.sleep(forTimeInterval: pause)
                readable = true
            } else if let sleepOn {
                readable = wakeup.sleep(socket: sleepOn, timeout: 1)
            } else {
                readable = false  // what is buffered is read without the socket
            }
        }
        line.lock()
        connection?.close()
        connection = nil
        line.unlock()
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
