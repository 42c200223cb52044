import Foundation
import Logging
import Synchronization

/// Consumes one queue on a dedicated thread (rabbitmq-c blocks) and hands deliveries to async
/// code in batches: everything that arrived since the last ``nextBatch()`` (up to `maxBatch`),
/// so a slow consumer gets larger batches and can commit each in one transaction. A caller
/// writes its acknowledgements itself when the connection is free (waking the thread for each
/// cost every step a hand-over between threads), else queues them to the thread. After a lost
/// connection it reconnects with backoff, re-declares the topology and consumes again;
/// deliveries of the old connection are then redelivered by the broker, and their late acks
/// are dropped.
public final class AMQPConsumer: @unchecked Sendable {
    public struct Delivery: Sendable {
        public var message: AMQPDelivery
        /// Which connection delivered it.
        public var generation: Int
    }

    private typealias Settlement = UnsettledDeliveries.Settlement

    private let url: AMQPURL
    private let queue: String
    private let declare: @Sendable (AMQPConnection) throws -> Void
    private let logger: Logger
    private typealias Pending = (generation: Int, settlement: Settlement)
    /// `window`: the most deliveries this connection may hold unsettled, 0 for none
    /// (``limit(to:)``);
    /// `windowChanged`: the thread has yet to act on it (settlements asked for after the change
    /// wait for it, so that they reach the broker after it).
    private let state:
        Mutex<
            (stopped: Bool, generation: Int, connected: Bool, pending: [Pending], window: Int, windowChanged: Bool)
        >
    private let maxBatch: Int
    /// Given each delivery on the consuming thread instead of ``nextBatch()``.
    private let handler: (@Sendable (AMQPConsumer, Delivery) -> Void)?
    /// Written when there is something to settle or a job to run; the thread polls it with the
    /// socket.
    private let wakeup = Wakeup()
    /// Runs jobs of tasks that prefer it on this consumer's thread (nil unless asked for).
    public let executor: ConsumerThreadExecutor?
    private let buffer = Mutex(
        (
            deliveries: [Delivery](), waiter: CheckedContinuation<[Delivery]?, Never>?.none, finished: false, delivering: true
        ))
    /// Held while the connection is used: by the thread to read deliveries and send queued
    /// settlements, and by a caller that sends its own. A caller only tries it.
    private let line = NSLock()
    // Guarded by `line`.
    private var live: (connection: AMQPConnection, generation: Int)?
    private var unsettled = UnsettledDeliveries()
    /// Why a caller's settlement failed: the thread then reconnects.
    private var broken: (any Error)?
    /// Whether the broker registered this consumer once (nil until then), and who waits for it.
    private let registered = Mutex((outcome: Bool?.none, waiters: [CheckedContinuation<Bool, Never>]()))

    /// With `runsTasks`, ``executor`` runs the jobs of tasks that prefer it on this consumer's
    /// thread: a loop over ``nextBatch()`` there is resumed without a hand-over between threads.
    public convenience init(
        url: AMQPURL, queue: String, prefetch: Int, maxBatch: Int = 1, logger: Logger = Logger(label: "keel.amqp"),
        runsTasks: Bool = false, declare: @escaping @Sendable (AMQPConnection) throws -> Void
    ) {
        self.init(
            url: url, queue: queue, prefetch: prefetch, maxBatch: maxBatch, logger: logger, runsTasks: runsTasks,
            declare: declare, handler: Optional<@Sendable (AMQPConsumer, Delivery) -> Void>.none)
    }

    /// A consumer that gives each delivery to `handler` on its thread, as it arrives, until
    /// ``stopDelivering()``; ``nextBatch()`` then only says when delivering ended (nil).
    /// `handler` must not block: it starts the work (a task) and returns. Compared with a loop
    /// over ``nextBatch()`` that starts the tasks, this saves every delivery a hand-over between
    /// threads.
    public convenience init(
        url: AMQPURL, queue: String, prefetch: Int, logger: Logger = Logger(label: "keel.amqp"),
        declare: @escaping @Sendable (AMQPConnection) throws -> Void,
        handler: @escaping @Sendable (AMQPConsumer, Delivery) -> Void
    ) {
        self.init(
            url: url, queue: queue, prefetch: prefetch, maxBatch: prefetch, logger: logger, runsTasks: false,
            declare: declare, handler: Optional(handler))
    }

    private init(
        url: AMQPURL, queue: String, prefetch: Int, maxBatch: Int, logger: Logger, runsTasks: Bool,
        declare: @escaping @Sendable (AMQPConnection) throws -> Void,
        handler: (@Sendable (AMQPConsumer, Delivery) -> Void)?
    ) {
        self.url = url
        self.queue = queue
        state = Mutex((stopped: false, generation: 0, connected: false, pending: [], window: prefetch, windowChanged: false))
        self.maxBatch = max(maxBatch, 1)
        self.declare = declare
        self.logger = logger
        self.handler = handler
        executor = runsTasks ? ConsumerThreadExecutor(wakeup: wakeup) : nil
    }

    /// Starts the consuming thread.
    public func start() {
        let thread = Thread { [self] in loop() }
        thread.name = "keel.amqp.consumer.\(queue)"
        thread.start()
    }

    /// Returns once the broker has registered the consumer (true), or the consumer stopped
    /// before it ever did (false). Until then a process announcing that it serves the queue
    /// would be ahead of the broker's consumer count.
    public func consuming() async -> Bool {
        await withCheckedContinuation { continuation in
            let outcome = registered.withLock { registered -> Bool? in
                if registered.outcome == nil { registered.waiters.append(continuation) }
                return registered.outcome
            }
            if let outcome { continuation.resume(returning: outcome) }
        }
    }

    private func settleRegistration(_ outcome: Bool) {
        let waiters = registered.withLock { registered -> [CheckedContinuation<Bool, Never>] in
            guard registered.outcome == nil else { return [] }
            registered.outcome = outcome
            defer { registered.waiters.removeAll() }
            return registered.waiters
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }

    /// Ends ``nextBatch()`` (it returns nil from now on) while the connection stays open, so that
    /// deliveries already taken can still be acknowledged; ``stop()`` then closes it, and what
    /// was not taken goes back to the queue.
    public func stopDelivering() {
        let waiter = buffer.withLock { buffer in
            buffer.delivering = false
            defer { buffer.waiter = nil }
            return buffer.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Holds this connection to at most `deliveries` unsettled deliveries from now on (0: takes
    /// none). RabbitMQ cannot change a consumer's prefetch, and a new consumer's window does not
    /// count what an earlier one delivered, so the thread keeps the windows of its consumers plus
    /// the unsettled deliveries of cancelled ones at `deliveries`: to narrow, it cancels them all;
    /// to widen (or as those deliveries settle), it adds a consumer with the room, folding in the
    /// consumers that hold nothing. An acknowledgement asked for after this call reaches the
    /// broker after the cancels, so the room it frees is not filled. A few deliveries sent before
    /// a cancel may still arrive.
    public func limit(to deliveries: Int) {
        state.withLock { state in
            state.window = max(deliveries, 0)
            state.windowChanged = true
        }
        wakeup.signal()
    }

    /// The window the consumer should have, and whether it changed since the thread last looked.
    private func takeWindow() -> (window: Int, changed: Bool) {
        state.withLock { state in
            defer { state.windowChanged = false }
            return (state.window, state.windowChanged)
        }
    }

    /// Stops consuming; unacknowledged deliveries go back to the queue.
    public func stop() {
        state.withLock { $0.stopped = true }
        wakeup.signal()
    }

    /// The deliveries received since the last call (at most `maxBatch`), waiting for one if there
    /// are none; nil once the consumer stopped.
    public func nextBatch() async -> [Delivery]? {
        await withCheckedContinuation { continuation in
            let ready: [Delivery]?? = buffer.withLock { buffer in
                if !buffer.delivering { return .some(nil) }
                if !buffer.deliveries.isEmpty { return .some(take(&buffer.deliveries)) }
                if buffer.finished { return .some(nil) }
                buffer.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// For a consumer with a handler: returns once delivering ended (``stopDelivering()``, or
    /// the consumer stopped).
    public func deliveriesEnded() async {
        while await nextBatch() != nil {}
    }

    private func take(_ deliveries: inout [Delivery]) -> [Delivery] {
        let count = min(maxBatch, deliveries.count)
        defer { deliveries.removeFirst(count) }
        return Array(deliveries.prefix(count))
    }

    private func hand(_ deliveries: [Delivery]) {
        if let handler {
            // Not after stopDelivering(): left unacknowledged, they go back with the connection.
            guard buffer.withLock({ $0.delivering }) else { return }
            for delivery in deliveries { handler(self, delivery) }
            return
        }
        let (waiter, batch) = buffer.withLock { buffer -> (CheckedContinuation<[Delivery]?, Never>?, [Delivery]) in
            buffer.deliveries += deliveries
            guard let waiter = buffer.waiter else { return (nil, []) }
            buffer.waiter = nil
            return (waiter, take(&buffer.deliveries))
        }
        waiter?.resume(returning: batch)
    }

    /// The settlements queued for the connection of `generation` (those of an older one are
    /// dropped: the broker delivers their messages again).
    private func takePending(_ generation: Int) -> [Settlement] {
        state.withLock { state in
            defer { state.pending.removeAll() }
            return state.pending.compactMap { $0.generation == generation ? $0.settlement : nil }
        }
    }

    /// Holds `line`.
    private func settle(_ settlements: [Settlement], on connection: AMQPConnection) throws {
        guard !settlements.isEmpty else { return }
        let frames = unsettled.frames(settling: settlements)
        try connection.corked(if: frames.count > 1) {
            for frame in frames {
                switch frame {
                case .ack(let tag, let multiple): try connection.ack(tag, multiple: multiple)
                case .reject(let tag): try connection.reject(tag)
                }
            }
        }
    }

    private func finish() {
        settleRegistration(false)
        state.withLock { $0.pending.removeAll() }
        let waiter = buffer.withLock { buffer in
            buffer.finished = true
            defer { buffer.waiter = nil }
            return buffer.deliveries.isEmpty ? buffer.waiter : nil
        }
        waiter?.resume(returning: nil)
    }

    public func ack(_ delivery: Delivery) { settle(delivery, .ack(delivery.message.deliveryTag)) }

    /// Acknowledges deliveries finished in any order together: those below the oldest one still
    /// unsettled fold into one `multiple` frame (one queue operation in the broker for the lot).
    public func ack(_ deliveries: [Delivery]) {
        settle(deliveries.map { (generation: $0.generation, settlement: Settlement.ack($0.message.deliveryTag)) })
    }

    /// Acknowledges `batch` with one frame (`multiple`): for consumers that finish deliveries in
    /// the order they came, so that nothing earlier is still being worked on.
    public func ackInOrder(_ batch: [Delivery]) {
        guard let last = batch.last else { return }
        if batch.contains(where: { $0.generation != last.generation }) {
            batch.forEach(ack)
        } else {
            settle(last, .ackThrough(last.message.deliveryTag))
        }
    }

    /// Acknowledges `batch` but the deliveries already rejected (by delivery tag): in one frame
    /// when none was, else one by one (a multiple ack must not cover a settled tag).
    public func ack(_ batch: [Delivery], except rejected: Set<UInt64>) {
        if rejected.isEmpty { return ackInOrder(batch) }
        for delivery in batch where !rejected.contains(delivery.message.deliveryTag) { ack(delivery) }
    }

    /// Rejects without requeue: the queue's dead-letter exchange gets the message.
    public func reject(_ delivery: Delivery) { settle(delivery, .reject(delivery.message.deliveryTag)) }

    /// Whether the connection that delivered `delivery` still stands, as far as this consumer
    /// knows: if not, the broker delivers it again and an ack would be dropped.
    public func isCurrent(_ delivery: Delivery) -> Bool {
        state.withLock { $0.connected && !$0.stopped && $0.generation == delivery.generation }
    }

    private func settle(_ delivery: Delivery, _ settlement: Settlement) {
        settle([(delivery.generation, settlement)])
    }

    private func settle(_ settlements: [Pending]) {
        guard !settlements.isEmpty else { return }
        if settleDirectly(settlements) { return }
        state.withLock { $0.pending += settlements }
        wakeup.signal()
    }

    /// Sends the settlements on the caller's thread if the connection that delivered them is up
    /// and free and no settlement waits for the thread (it would then go after these). Returns
    /// false if it left them to the thread.
    private func settleDirectly(_ settlements: [Pending]) -> Bool {
        guard line.try() else { return false }
        defer { line.unlock() }
        guard let live, settlements.allSatisfy({ $0.generation == live.generation }), broken == nil,
            state.withLock({ !$0.stopped && $0.pending.isEmpty && !$0.windowChanged })
        else { return false }
        do {
            try settle(settlements.map(\.settlement), on: live.connection)
        } catch {
            // Lost with the connection: the broker delivers the message again.
            broken = error
            wakeup.signal()
        }
        return true
    }

    private func loop() {
        executor?.adopt()
        var backoff = 0.2
        while !state.withLock({ $0.stopped }) {
            do {
                let connection = try AMQPConnection(url: url)
                try declare(connection)
                // The broker's consumers on this connection, by tag, with their windows: more
                // than one while ``limit(to:)`` widened the window with deliveries unsettled.
                var active: [String: Int] = [:]
                var consumers = 0
                // Whether the deliveries the broker may have outstanding still differ from the
                // limit (deliveries of cancelled consumers are unsettled).
                var rebalancing = false
                func consume(window: Int) throws {
                    guard window > 0 else { return }
                    consumers += 1
                    let tag = "keel.\(consumers)"
                    try connection.qos(prefetch: window)
                    try connection.consume(queue: queue, tag: tag)
                    active[tag] = window
                }
                func cancel(_ tag: String) throws {
                    try connection.cancel(consumer: tag)
                    active.removeValue(forKey: tag)
                }
                // Brings what the broker may have outstanding (the unsettled deliveries of
                // cancelled consumers, and the active consumers' windows) to `limit`. Larger:
                // every consumer is cancelled, ahead of the acknowledgements that would free room
                // in their windows. Smaller: the consumers with nothing unsettled give way to one
                // new consumer with their windows and the room, at once (RabbitMQ cannot widen a
                // consumer's window). Returns whether it is stable: no delivery of a cancelled
                // consumer unsettled, whose settlement would make room again.
                func rebalance(to limit: Int) throws -> Bool {
                    let held = unsettled.countByConsumer
                    var orphaned = held.reduce(0) { active[$1.key] == nil ? $0 + $1.value : $0 }
                    var outstanding = orphaned + active.values.reduce(0, +)
                    if outstanding > limit {
                        for tag in Array(active.keys) { try cancel(tag) }
                        orphaned = unsettled.count
                        outstanding = orphaned
                    }
                    if outstanding < limit {
                        // Cancelling a consumer that holds nothing orphans nothing.
                        for (tag, window) in active where held[tag, default: 0] == 0 {
                            try cancel(tag)
                            outstanding -= window
                        }
                        try consume(window: limit - outstanding)
                    }
                    return orphaned == 0
                }
                rebalancing = try line.withLock {
                    unsettled = UnsettledDeliveries()
                    return try !rebalance(to: takeWindow().window)
                }
                // Settlements for the old connection are dropped: the broker delivers again.
                let generation = state.withLock { state in
                    state.generation += 1
                    state.connected = true
                    state.pending.removeAll()
                    return state.generation
                }
                line.withLock {
                    live = (connection, generation)
                    unsettled = UnsettledDeliveries()
                    broken = nil
                }
                settleRegistration(true)
                if generation > 1 { logger.info("consuming \(queue) again after reconnecting to \(url)") }
                backoff = 0.2
                // Whether the socket may have input: false only after a wake-up by a settlement,
                // a job or stop() alone, or once a read took what a wake-up found.
                var readable = true
                while !state.withLock({ $0.stopped }) {
                    executor?.runPending()
                    let (batch, buffered) = try line.withLock { () throws -> ([Delivery], Bool) in
                        if let error = broken { throw error }
                        // Before the settlements asked for since: a smaller window must reach the
                        // broker ahead of the acknowledgement that would free room in the old one.
                        let (limit, changed) = takeWindow()
                        if changed || rebalancing { rebalancing = try !rebalance(to: limit) }
                        try settle(takePending(generation), on: connection)
                        var batch: [Delivery] = []
                        // One read of the socket, for the batch's first delivery, takes all that
                        // is there; the rest of the batch is in rabbitmq-c's buffer.
                        while batch.count < maxBatch,
                            let message = try readable && batch.isEmpty
                                ? connection.next(timeout: 0) : connection.nextBuffered()
                        {
                            batch.append(Delivery(message: message, generation: generation))
                        }
                        readable = false
                        // Before anyone may settle them.
                        for delivery in batch {
                            unsettled.delivered(delivery.message.deliveryTag, to: delivery.message.consumerTag)
                        }
                        return (batch, connection.hasBufferedInput)
                    }
                    if !batch.isEmpty {
                        hand(batch)
                    } else if !buffered {
                        // Woken by a delivery, a settlement to send or stop(); the timeout only bounds a lost wakeup.
                        readable = wakeup.sleep(socket: connection.socketDescriptor, timeout: 1)
                    }
                }
                // Acknowledge what finished before the stop, then close (a reject still pending is
                // dropped: its message goes back to the queue with the close).
                line.withLock {
                    let finished = takePending(generation).filter { if case .reject = $0 { false } else { true } }
                    try? settle(finished, on: connection)
                    live = nil
                }
                connection.close()
            } catch {
                line.withLock { live = nil }
                state.withLock { $0.connected = false }
                if state.withLock({ $0.stopped }) { break }
                logger.warning("consumer of \(queue): \(error); reconnecting in \(backoff) s")
                pause(backoff)
                backoff = min(backoff * 2, 10)
            }
        }
        finish()
        executor?.close()
    }

    /// Waits `seconds` before connecting again, running jobs meanwhile.
    private func pause(_ seconds: Double) {
        let until = Date().addingTimeInterval(seconds)
        while until.timeIntervalSinceNow > 0, !state.withLock({ $0.stopped }) {
            executor?.runPending()
            wakeup.sleep(socket: nil, timeout: until.timeIntervalSinceNow)
        }
    }
}
