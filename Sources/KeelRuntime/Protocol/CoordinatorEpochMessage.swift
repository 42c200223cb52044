import Foundation
import KeelAMQP
import KeelCore

/// A coordinator's epoch, told to every worker on `keel.control` (a fanout exchange) when it
/// starts, before it publishes any task again: a worker that holds the first copy of a task the
/// previous coordinator published (queued behind its running activities) then claims it before
/// running it, like the copy the new coordinator publishes, and only one of them runs.
public struct CoordinatorEpochNotice: Codable, Sendable, Hashable {
    public var coordinatorEpoch: Int64

    public init(coordinatorEpoch: Int64) { self.coordinatorEpoch = coordinatorEpoch }

    func message(topology: Topology) throws -> AMQPMessage {
        AMQPMessage(
            exchange: topology.controlExchange, routingKey: "", body: try Wire.encode(self),
            type: WireType.coordinatorEpoch.rawValue,
            headers: ["keel-type": WireType.coordinatorEpoch.rawValue, "keel-version": wireVersion], persistent: false)
    }
}
