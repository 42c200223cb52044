import CAMQP
import Foundation
import Logging

// Consuming: QoS, consumers, deliveries and their settlement, basic.get.
extension AMQPConnection {
    public func qos(prefetch: Int) throws {
        amqp_basic_qos(state, channel, 0, UInt16(clamping: prefetch), 0)
        try check(.consumeFailed, "setting prefetch \(prefetch)")
    }

    /// Consumes `queue`; `tag` names the consumer (default: the broker picks one), for ``cancel(consumer:)``.
    public func consume(queue: String, noAck: Bool = false, tag: String = "") throws {
        withBytes(queue, tag) {
            _ = amqp_basic_consume(state, channel, $0[0], $0[1], 0, noAck ? 1 : 0, 0, amqp_empty_table)
        }
        try check(.consumeFailed, "consuming \(queue)")
    }

    /// Ends consumer `tag` (basic.cancel, waiting for the broker's cancel-ok): no more deliveries
    /// for it are sent after those already on their way, and what it was delivered stays with the
    /// channel, to be acknowledged or rejected as before.
    public func cancel(consumer tag: String) throws {
        withBytes(tag) { _ = amqp_basic_cancel(state, channel, $0[0]) }
        try check(.consumeFailed, "cancelling consumer \(tag)")
    }

    /// Consumes a stream queue from `offset` (nil: its first message). Each delivery carries its
    /// offset in the `x-stream-offset` header. Streams need a prefetch (``qos(prefetch:)``) and acks.
    public func consumeStream(queue: String, from offset: Int64?) throws {
        var error = [CChar](repeating: 0, count: 512)
        guard keel_amqp_consume_stream(state, channel, queue, offset ?? -1, &error, error.count) == 0 else {
            throw AMQPError(.consumeFailed, "consuming the stream \(queue): \(cText(error))")
        }
    }

    /// The next delivery, or nil when none arrived within `timeout` seconds.
    public func next(timeout: Double) throws -> AMQPDelivery? {
        amqp_maybe_release_buffers(state)
        var envelope = amqp_envelope_t()
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1_000_000))
        let reply = amqp_consume_message(state, &envelope, &tv, 0)
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            defer { amqp_destroy_envelope(&envelope) }
            return delivery(from: envelope)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_TIMEOUT.rawValue:
            return nil
        case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_UNEXPECTED_STATE.rawValue:
            // A frame that is not a delivery: a confirm, or the broker closing the channel.
            try readFrame(timeout: 0.01)
            return nil
        default:
            var text = [CChar](repeating: 0, count: 512)
            keel_amqp_describe_reply(reply, &text, text.count)
            throw AMQPError(.connectionLost, "consuming from \(url): \(cText(text))")
        }
    }

    /// The next delivery from what was already read off the socket (nil when rabbitmq-c holds
    /// no input, without a system call): after one ``next(timeout:)`` read all that a `poll`
    /// found, the rest of a batch comes from here.
    public func nextBuffered() throws -> AMQPDelivery? {
        guard hasBufferedInput else { return nil }
        return try next(timeout: 0)
    }

    /// Acknowledges a delivery; with `multiple`, every earlier unacknowledged one too.
    public func ack(_ deliveryTag: UInt64, multiple: Bool = false) throws {
        let status = amqp_basic_ack(state, channel, deliveryTag, multiple ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(.connectionLost, "ack failed: \(String(cString: amqp_error_string2(status)))")
        }
    }

    /// Rejects without requeue: the queue's dead-letter exchange receives the message.
    public func reject(_ deliveryTag: UInt64, requeue: Bool = false) throws {
        let status = amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(.connectionLost, "reject failed: \(String(cString: amqp_error_string2(status)))")
        }
    }

    /// Takes one message without a consumer (basic.get); nil when the queue is empty.
    public func get(queue: String) throws -> AMQPDelivery? {
        let reply = withBytes(queue) { amqp_basic_get(state, channel, $0[0], 0) }
        try check(.consumeFailed, "reading \(queue)")
        guard reply.reply.id == AMQP_BASIC_GET_OK_METHOD else { return nil }
        let ok = reply.reply.decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
        var message = amqp_message_t()
        let read = amqp_read_message(state, channel, &message, 0)
        var text = [CChar](repeating: 0, count: 512)
        guard keel_amqp_describe_reply(read, &text, text.count) == 0 else {
            throw AMQPError(.consumeFailed, "reading a message body from \(queue): \(cText(text))")
        }
        defer { amqp_destroy_message(&message) }
        var envelope = amqp_envelope_t()
        envelope.delivery_tag = ok.delivery_tag
        envelope.redelivered = ok.redelivered
        envelope.exchange = ok.exchange
        envelope.routing_key = ok.routing_key
        envelope.message = message
        return delivery(from: envelope)
    }

    func delivery(from envelope: amqp_envelope_t) -> AMQPDelivery {
        var properties = envelope.message.properties
        func bytes(_ value: amqp_bytes_t) -> String {
            String(decoding: UnsafeRawBufferPointer(start: value.bytes, count: value.len), as: UTF8.self)
        }
        func optional(_ flag: Int32, _ value: amqp_bytes_t) -> String? {
            (properties._flags & amqp_flags_t(flag)) != 0 ? bytes(value) : nil
        }
        // Every string header: Keel's (`keel-*`) and the trace context (`traceparent`, …); and
        // integers in decimal (a stream's `x-stream-offset`).
        var headers: [String: String] = [:]
        if (properties._flags & amqp_flags_t(AMQP_BASIC_HEADERS_FLAG)) != 0, let entries = properties.headers.entries {
            for entry in UnsafeBufferPointer(start: entries, count: Int(properties.headers.num_entries)) {
                switch UInt32(entry.value.kind) {
                case AMQP_FIELD_KIND_UTF8.rawValue, AMQP_FIELD_KIND_BYTES.rawValue:
                    headers[bytes(entry.key)] = bytes(entry.value.value.bytes)
                case AMQP_FIELD_KIND_I64.rawValue: headers[bytes(entry.key)] = String(entry.value.value.i64)
                case AMQP_FIELD_KIND_U64.rawValue: headers[bytes(entry.key)] = String(entry.value.value.u64)
                case AMQP_FIELD_KIND_I32.rawValue: headers[bytes(entry.key)] = String(entry.value.value.i32)
                default: continue
                }
            }
        }
        var reason = [CChar](repeating: 0, count: 256)
        var queue = [CChar](repeating: 0, count: 256)
        var count: Int64 = 0
        let death =
            keel_amqp_first_death(&properties, &reason, reason.count, &queue, queue.count, &count) == 0
            ? (cText(reason), cText(queue), count) : nil
        return AMQPDelivery(
            deliveryTag: envelope.delivery_tag, exchange: bytes(envelope.exchange), routingKey: bytes(envelope.routing_key),
            redelivered: envelope.redelivered != 0,
            body: Data(UnsafeRawBufferPointer(start: envelope.message.body.bytes, count: envelope.message.body.len)),
            type: optional(AMQP_BASIC_TYPE_FLAG, properties.type),
            messageId: optional(AMQP_BASIC_MESSAGE_ID_FLAG, properties.message_id),
            replyTo: optional(AMQP_BASIC_REPLY_TO_FLAG, properties.reply_to),
            correlationId: optional(AMQP_BASIC_CORRELATION_ID_FLAG, properties.correlation_id),
            userId: optional(AMQP_BASIC_USER_ID_FLAG, properties.user_id), headers: headers, death: death,
            consumerTag: bytes(envelope.consumer_tag))
    }
}
