import Foundation

@testable import KeelAMQP

/// Publishes `count` messages to `queue` through the default exchange, their bodies "0", "1", …,
/// and waits until RabbitMQ confirms them (the connection is put in confirm mode).
func publishNumbered(_ count: Int, to queue: String, on connection: AMQPConnection) throws {
    try connection.enableConfirms()
    for index in 0..<count {
        try connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: Data("\(index)".utf8)))
    }
    try connection.waitForConfirms()
}
