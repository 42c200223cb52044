import Foundation
import KeelAMQP

/// A queue of the test's own on the broker at `KEEL_AMQP_URL`, declared through `setup`, a
/// connection kept for the test; ``remove()`` deletes the queue and closes the connection.
public struct TestQueue {
    public let url: AMQPURL
    public let name: String
    public let setup: AMQPConnection

    public init(_ purpose: String) throws {
        url = try AMQPURL.fromEnvironment()
        name = "keel.test.\(purpose).\(UUID().uuidString.prefix(8))"
        setup = try AMQPConnection(url: url)
        try setup.declareQueue(name, deadLetterExchange: nil)
    }

    public func remove() {
        try? setup.deleteQueue(name)
        setup.close()
    }
}
