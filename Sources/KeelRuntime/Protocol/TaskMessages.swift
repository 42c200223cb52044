import Foundation
import KeelAMQP
import KeelCore

extension ActivityTask {
    /// The task as it goes to `keel.tasks`, routed by its task queue: its type in the `type`
    /// property, `keel-version: 2` and, when traced, the trace context (W3C headers).
    func message(topology: Topology) throws -> AMQPMessage {
        var headers = ["keel-version": taskWireVersion]
        if let trace { headers.merge(trace) { keel, _ in keel } }
        return AMQPMessage(
            exchange: topology.tasksExchange, routingKey: taskQueue, body: try wireBody(),
            type: WireType.task.rawValue, messageId: attemptKey, headers: headers)
    }
}

extension DeadLetterEntry {
    /// The entry as it goes to `keel.dead` (docs/protocol.md, "Dead letters").
    func message(topology: Topology) throws -> AMQPMessage {
        AMQPMessage(
            exchange: topology.deadLetterExchange, routingKey: taskQueue, body: try Wire.encode(self),
            type: WireType.deadLetter.rawValue, messageId: id,
            headers: [
                "keel-type": WireType.deadLetter.rawValue, "keel-version": wireVersion,
                "keel-workflow-id": workflowId, "keel-run-id": runId, "keel-activity-type": activityType,
                "keel-origin": topology.queue(forTaskQueue: taskQueue),
                "keel-error": String("\(failure.type): \(failure.message)".prefix(1000))
            ])
    }
}

extension AMQPPublisher {
    /// Publishes a wire message of `type` to `exchange`.
    public func send<T: Encodable>(
        _ type: WireType, _ body: T, exchange: String, routingKey: String, messageId: String? = nil
    ) async throws {
        try await publish([.wire(type, body, exchange: exchange, routingKey: routingKey, messageId: messageId)])
    }
}
