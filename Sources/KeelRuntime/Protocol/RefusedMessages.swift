import Foundation
import KeelAMQP
import KeelCore
import Logging

/// The one way a Keel process gives up on a message it cannot process, whichever queue it came
/// from: the message goes to `keel.dead` with the reason (`keel-error`) and the queue it came
/// from (`keel-origin`); if even that publish fails, the delivery is rejected and RabbitMQ
/// dead-letters it through the queue's own dead-letter exchange (with `x-death`, without the
/// reason). Either way the reason is logged as it happens.
struct RefusedMessages: Sendable {
    let publisher: AMQPPublisher
    let logger: Logger

    /// Dead-letters `delivery`. Returns true when it was rejected instead: the caller must then
    /// not acknowledge it (the rejection settled it).
    func deadLetter(
        _ delivery: AMQPConsumer.Delivery, from queue: String, reason: String, consumer: AMQPConsumer
    ) async -> Bool {
        let message = delivery.message
        logger.warning("\(message.type ?? "untyped message") from \(queue) dead-lettered: \(reason)")
        do {
            try await publisher.publish([Self.deadLetter(message, from: queue, reason: reason, topology: publisher.topology)])
            return false
        } catch {
            logger.error("dead-lettering a \(message.type ?? "message") from \(queue) failed (\(error)); rejected instead")
            consumer.reject(delivery)
            return true
        }
    }

    /// `message` as it goes to `keel.dead`: its body and headers, with the reason and origin.
    /// Headers too large for a frame would make that publish fail too: such a message keeps only
    /// its Keel type header.
    static func deadLetter(_ message: AMQPDelivery, from queue: String, reason: String, topology: Topology) -> AMQPMessage {
        var headers =
            message.headerBytes <= MessageLimits().headers
            ? message.headers : message.headers.filter { $0.key == "keel-type" && $0.value.utf8.count < 64 }
        headers["keel-error"] = String(reason.prefix(1000))
        headers["keel-origin"] = queue
        return AMQPMessage(
            exchange: topology.deadLetterExchange, routingKey: queue, body: message.body, type: message.type,
            messageId: message.messageId, headers: headers)
    }
}
