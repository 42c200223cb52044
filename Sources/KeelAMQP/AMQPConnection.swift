import CAMQP
import Foundation
import Logging

/// One rabbitmq-c connection with one channel. rabbitmq-c is synchronous and not thread-safe:
/// an instance must be used by one thread at a time (its owner serialises calls).
public final class AMQPConnection: @unchecked Sendable {
    let state: amqp_connection_state_t
    let channel: amqp_channel_t = 1
    public let url: AMQPURL
    var confirms = false
    let logger: Logger
    /// Delivery tags published in confirm mode and not yet confirmed.
    var unconfirmed: Set<UInt64> = []
    var lastTag: UInt64 = 0
    var lowestUnsettled: UInt64 = 1
    /// Nacked delivery tags not yet reported by ``takeRefusals(in:)``.
    var refusedTags: Set<UInt64> = []
    /// The broker has blocked publishing on this connection (a memory or disk alarm).
    public private(set) var isBlocked = false
    var nacked = false
    var isOpen = false

    /// `name`: what the broker shows for this connection (`connection_name`), nil for none.
    public init(
        url: AMQPURL, heartbeat: Int = 30, connectTimeout: Double = 5, name: String? = nil,
        logger: Logger = Logger(label: "keel.amqp")
    ) throws {
        self.url = url
        self.logger = logger
        guard let state = amqp_new_connection() else { throw AMQPError(.connectionFailed, "out of memory") }
        self.state = state
        let socket: OpaquePointer?
        if url.tls {
            socket = amqp_ssl_socket_new(state)
            if let socket {
                amqp_ssl_socket_set_verify_peer(socket, 1)
                amqp_ssl_socket_set_verify_hostname(socket, 1)
            }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else {
            amqp_destroy_connection(state)
            throw AMQPError(.connectionFailed, "cannot create a socket")
        }
        var timeout = timeval(tv_sec: Int(connectTimeout), tv_usec: 0)
        let status = amqp_socket_open_noblock(socket, url.host, Int32(url.port), &timeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(state)
            throw AMQPError(.connectionFailed, "cannot reach RabbitMQ at \(url): \(String(cString: amqp_error_string2(status)))")
        }
        var error = [CChar](repeating: 0, count: 512)
        if keel_amqp_login(state, url.vhost, 131_072, Int32(heartbeat), url.user, url.password, name, &error, error.count) != 0 {
            amqp_destroy_connection(state)
            throw AMQPError(.loginFailed, "login to \(url) failed: \(cText(error))")
        }
        amqp_channel_open(state, channel)
        try check(.channelFailed, "opening a channel")
        isOpen = true
    }

    deinit { close() }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
        amqp_connection_close(state, AMQP_REPLY_SUCCESS)
        amqp_destroy_connection(state)
    }

    func check(_ code: AMQPError.Code, _ what: String) throws {
        var text = [CChar](repeating: 0, count: 512)
        if keel_amqp_describe_reply(amqp_get_rpc_reply(state), &text, text.count) != 0 {
            throw AMQPError(code, "\(what): \(cText(text))")
        }
    }

    // MARK: Topology

    public func declareExchange(_ name: String, type: String) throws {
        withBytes(name, type) { amqp_exchange_declare(state, channel, $0[0], $0[1], 0, 1, 0, 0, amqp_empty_table) }
        try check(.declareFailed, "declaring exchange \(name)")
    }

    /// A durable queue; `queueType` nil leaves the broker's default (classic); with `maxLength`
    /// it keeps only its newest `maxLength` messages.
    public func declareQueue(_ name: String, deadLetterExchange: String?, queueType: String? = nil, maxLength: Int? = nil) throws
    {
        var error = [CChar](repeating: 0, count: 512)
        let maxLength = Int64(maxLength ?? 0)
        if keel_amqp_queue_declare(state, channel, name, deadLetterExchange, queueType, maxLength, &error, error.count) != 0 {
            let text = cText(error)
            let hint =
                text.contains("x-queue-type")
                ? " (the queue exists with another type: every Keel process of a namespace needs the same KEEL_QUEUE_TYPE; delete the namespace's queues to change it)"
                : ""
            throw AMQPError(.declareFailed, "declaring queue \(name): \(text)\(hint)")
        }
    }

    /// A queue of this connection alone, deleted when it closes (not durable, exclusive, auto-delete).
    public func declareExclusiveQueue(_ name: String) throws {
        withBytes(name) { amqp_queue_declare(state, channel, $0[0], 0, 0, 1, 1, amqp_empty_table) }
        try check(.declareFailed, "declaring queue \(name)")
    }

    /// Opens the channel again after the broker closed it over an error (such as ACCESS_REFUSED).
    public func reopenChannel() throws {
        var error = [CChar](repeating: 0, count: 512)
        if keel_amqp_reopen_channel(state, channel, &error, error.count) != 0 {
            throw AMQPError(.channelFailed, "reopening the channel: \(cText(error))")
        }
        if confirms {
            confirms = false
            try enableConfirms()
        }
    }

    /// Checks that exchange `name` exists (a passive declare: no configure permission needed).
    public func checkExchange(_ name: String) throws {
        withBytes(name, "direct") { amqp_exchange_declare(state, channel, $0[0], $0[1], 1, 0, 0, 0, amqp_empty_table) }
        try check(.declareFailed, "checking exchange \(name)")
    }

    public func bind(queue: String, exchange: String, routingKey: String) throws {
        withBytes(queue, exchange, routingKey) { amqp_queue_bind(state, channel, $0[0], $0[1], $0[2], amqp_empty_table) }
        try check(.declareFailed, "binding \(queue) to \(exchange) with key \(routingKey)")
    }

    /// Messages in `queue` ready for delivery (passive declare).
    public func messageCount(queue: String) throws -> Int {
        try inspect(queue: queue).messages
    }

    /// Messages ready for delivery in `queue`, and its consumers (passive declare).
    public func inspect(queue: String) throws -> (messages: Int, consumers: Int) {
        guard let ok = withBytes(queue, body: { amqp_queue_declare(state, channel, $0[0], 1, 0, 0, 0, amqp_empty_table) }) else {
            try check(.declareFailed, "inspecting queue \(queue)")
            return (0, 0)
        }
        return (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
    }

    public func deleteQueue(_ queue: String) throws {
        withBytes(queue) { _ = amqp_queue_delete(state, channel, $0[0], 0, 0) }
        try check(.declareFailed, "deleting queue \(queue)")
    }

    public func deleteExchange(_ exchange: String) throws {
        withBytes(exchange) { _ = amqp_exchange_delete(state, channel, $0[0], 0) }
        try check(.declareFailed, "deleting exchange \(exchange)")
    }

    public func purge(queue: String) throws {
        withBytes(queue) { _ = amqp_queue_purge(state, channel, $0[0]) }
        try check(.declareFailed, "purging \(queue)")
    }

    // MARK: Publishing

    /// Switches the channel to publisher confirms.
    public func enableConfirms() throws {
        amqp_confirm_select(state, channel)
        try check(.channelFailed, "enabling publisher confirms")
        confirms = true
    }

    /// Publishes without waiting; with confirms enabled, ``waitForConfirms(timeout:)`` waits for all.
    public func publish(_ message: AMQPMessage) throws {
        let keys = Array(message.headers.keys)
        let status: Int32 = message.body.withUnsafeBytes { body in
            withCStrings(keys) { keyPointers in
                withCStrings(keys.map { message.headers[$0]! }) { valuePointers in
                    keel_amqp_publish(
                        state, channel, message.exchange, message.routingKey, body.baseAddress, body.count,
                        message.persistent ? 1 : 0, message.messageId, message.type, message.replyTo,
                        message.correlationId, message.signedByUser ? url.user : nil, Int32(keys.count), keyPointers,
                        valuePointers)
                }
            }
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(
                .publishFailed,
                "publishing to \(message.exchange)/\(message.routingKey): \(String(cString: amqp_error_string2(status)))")
        }
        if confirms {
            lastTag += 1
            unconfirmed.insert(lastTag)
        }
    }

    /// Waits until the broker confirmed every message published so far. While the broker blocks
    /// publishers (an alarm), it keeps waiting, and says so in the log every `timeout` seconds.
    public func waitForConfirms(timeout: Double = 30) throws {
        guard confirms else { return }
        var deadline = Date().addingTimeInterval(timeout)
        while !unconfirmed.isEmpty {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                guard isBlocked else {
                    throw AMQPError(
                        .publishNotConfirmed,
                        "RabbitMQ at \(url) did not confirm \(unconfirmed.count) message(s) within \(Int(timeout)) s")
                }
                logger.warning("RabbitMQ at \(url) still blocks publishing; \(unconfirmed.count) message(s) wait for it")
                deadline = Date().addingTimeInterval(timeout)
                continue
            }
            try readFrame(timeout: min(remaining, 1))
        }
        if nacked {
            nacked = false
            throw AMQPError(.publishNotConfirmed, "RabbitMQ refused (nacked) a published message")
        }
    }

    /// Reads one frame and handles confirms and channel closes. Returns false on timeout.
    @discardableResult
    func readFrame(timeout: Double) throws -> Bool {
        var frame = amqp_frame_t()
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1_000_000))
        let status = amqp_simple_wait_frame_noblock(state, &frame, &tv)
        if status == AMQP_STATUS_TIMEOUT.rawValue { return false }
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(.connectionLost, "connection to \(url) lost: \(String(cString: amqp_error_string2(status)))")
        }
        guard frame.frame_type == AMQP_FRAME_METHOD else { return true }
        switch frame.payload.method.id {
        case AMQP_BASIC_ACK_METHOD:
            let ack = frame.payload.method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            settle(ack.delivery_tag, multiple: ack.multiple != 0)
        case AMQP_BASIC_NACK_METHOD:
            let nack = frame.payload.method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            if nack.multiple != 0 {
                refusedTags.formUnion(unconfirmed.filter { $0 <= nack.delivery_tag })
            } else {
                refusedTags.insert(nack.delivery_tag)
            }
            settle(nack.delivery_tag, multiple: nack.multiple != 0)
            nacked = true
        case AMQP_CONNECTION_BLOCKED_METHOD:
            let blocked = frame.payload.method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            let reason = String(
                decoding: UnsafeRawBufferPointer(start: blocked.reason.bytes, count: blocked.reason.len), as: UTF8.self)
            isBlocked = true
            let why = reason.isEmpty ? "resource alarm" : reason
            logger.warning(
                "RabbitMQ at \(url) blocks publishing (\(why)); messages wait until it unblocks. Free memory or disk on the broker: `rabbitmqctl status` shows the alarm"
            )
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            isBlocked = false
            logger.notice("RabbitMQ at \(url) unblocked publishing")
        case AMQP_CHANNEL_CLOSE_METHOD:
            let close = frame.payload.method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let text = String(
                decoding: UnsafeRawBufferPointer(start: close.reply_text.bytes, count: close.reply_text.len), as: UTF8.self)
            throw AMQPError(.connectionLost, "RabbitMQ closed the channel: \(close.reply_code) \(text)")
        case AMQP_CONNECTION_CLOSE_METHOD:
            throw AMQPError(.connectionLost, "RabbitMQ closed the connection")
        case AMQP_BASIC_CANCEL_METHOD:
            // The broker ended one of this connection's consumers: its queue was deleted. A
            // consumer reconnects and declares its queue again.
            let cancel = frame.payload.method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            let tag = String(
                decoding: UnsafeRawBufferPointer(start: cancel.consumer_tag.bytes, count: cancel.consumer_tag.len),
                as: UTF8.self)
            throw AMQPError(
                .connectionLost, "RabbitMQ cancelled the consumer \(tag): its queue was deleted (or its node went down)")
        default:
            break
        }
        return true
    }

    /// Marks `tag` (and with `multiple`, every earlier tag) confirmed.
    func settle(_ tag: UInt64, multiple: Bool) {
        if multiple {
            unconfirmed = unconfirmed.filter { $0 > tag }
        } else {
            unconfirmed.remove(tag)
        }
    }

    // MARK: Windowed confirms

    /// The delivery tag of the last message published in confirm mode.
    public var lastPublishedTag: UInt64 { lastTag }

    /// Reads what the broker sent (confirms, alarms, channel closes) without waiting: for
    /// publishers that keep publishing while earlier confirms are on their way. Reads the socket
    /// only when `socketReadable` (a `poll` found input, or did not look): one `recv` takes all
    /// that is there, and what comes after it is for the next `poll`. Asking an empty socket
    /// costs a `recv` that fails and, in rabbitmq-c, a `poll` that does not wait.
    public func readArrived(socketReadable: Bool) throws {
        guard socketReadable || hasBufferedInput, try readFrame(timeout: 0) else { return }
        while hasBufferedInput, try readFrame(timeout: 0) {}
    }

    /// The socket, for waiting on it together with other descriptors (`poll`).
    public var socketDescriptor: Int32 { amqp_get_sockfd(state) }

    /// Runs `body` with the socket corked (`TCP_CORK`): the frames it writes leave together when it
    /// returns, in as few segments as they fill, instead of one segment per message or
    /// acknowledgement. The broker then reads a batch with one wake-up of its connection's
    /// reader. With `needed` false (one frame to write) the cork's two system calls are skipped.
    public func corked<T>(if needed: Bool = true, _ body: () throws -> T) rethrows -> T {
        let socket = socketDescriptor
        guard needed, socket >= 0 else { return try body() }
        var on: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_CORK, &on, socklen_t(MemoryLayout<Int32>.size))
        defer {
            var off: Int32 = 0
            setsockopt(socket, Int32(IPPROTO_TCP), TCP_CORK, &off, socklen_t(MemoryLayout<Int32>.size))
        }
        return try body()
    }

    /// Whether rabbitmq-c already holds input that `poll` on the socket would not report.
    public var hasBufferedInput: Bool { amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 }

    /// Whether every message up to `tag` was confirmed (acked or nacked).
    public func isSettled(through tag: UInt64) -> Bool {
        while lowestUnsettled <= lastTag, !unconfirmed.contains(lowestUnsettled) { lowestUnsettled += 1 }
        return lowestUnsettled > tag
    }

    /// Whether the broker refused (nacked) any message in `tags`; forgets those refusals.
    public func takeRefusals(in tags: ClosedRange<UInt64>) -> Bool {
        let refused = refusedTags.contains { tags.contains($0) }
        refusedTags = refusedTags.filter { !tags.contains($0) }
        return refused
    }

    // MARK: Consuming
}

/// Calls `body` with a C array of C strings that live for the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let duplicates = strings.map { UnsafePointer(strdup($0)) }
    defer { for duplicate in duplicates { free(UnsafeMutablePointer(mutating: duplicate)) } }
    return duplicates.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// The text of a NUL-terminated C buffer.
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Calls `body` with `amqp_bytes_t` views of `strings` that stay valid for the whole call.
@discardableResult
func withBytes<R>(_ strings: String..., body: ([amqp_bytes_t]) -> R) -> R {
    let copies = strings.map { strdup($0)! }
    defer { for copy in copies { free(copy) } }
    return body(copies.map { amqp_bytes_t(len: strlen($0), bytes: UnsafeMutableRawPointer($0)) })
}
