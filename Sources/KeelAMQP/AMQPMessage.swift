import CAMQP
import Foundation
import Logging

/// A message as received.
public struct AMQPDelivery: Sendable {
    public var deliveryTag: UInt64
    public var exchange: String
    public var routingKey: String
    public var redelivered: Bool
    public var body: Data
    public var type: String?
    public var messageId: String?
    public var replyTo: String?
    public var correlationId: String?
    /// The publisher's user, as RabbitMQ validated it (it refuses a `user_id` that is not the
    /// connection's user); nil when the publisher set none.
    public var userId: String? = nil
    /// String headers that Keel reads (`keel-*`).
    public var headers: [String: String]
    /// RabbitMQ's record of why the message was dead-lettered (first `x-death` entry).
    public var death: (reason: String, queue: String, count: Int64)?
    /// The consumer it came to (empty for a `basic.get`).
    public var consumerTag: String = ""
}

/// A message to send.
public struct AMQPMessage: Sendable {
    public var exchange: String
    public var routingKey: String
    public var body: Data
    public var type: String?
    public var messageId: String?
    public var replyTo: String?
    public var correlationId: String?
    /// Set to the connection's user by ``AMQPConnection/publish(_:)`` when `true`: RabbitMQ checks
    /// it, so a consumer can trust it (the coordinator authorises operators' jobs by it).
    public var signedByUser = false
    public var headers: [String: String]
    public var persistent: Bool

    public init(
        exchange: String, routingKey: String, body: Data, type: String? = nil, messageId: String? = nil,
        replyTo: String? = nil, correlationId: String? = nil, headers: [String: String] = [:], persistent: Bool = true
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.type = type
        self.messageId = messageId
        self.replyTo = replyTo
        self.correlationId = correlationId
        self.headers = headers
        self.persistent = persistent
    }
}
