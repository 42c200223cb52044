import Foundation
import KeelAMQP
import KeelCore

/// Publishes activity tasks to `keel.tasks`, routed by task queue, with confirms.
public struct AMQPTaskPublisher: TaskPublisher {
    let publisher: AMQPPublisher
    /// Told how many tasks of every batch go to each task queue (the queue monitor counts them).
    let onDispatch: @Sendable ([String: Int]) -> Void

    public init(publisher: AMQPPublisher, onDispatch: @escaping @Sendable ([String: Int]) -> Void = { _ in }) {
        self.publisher = publisher
        self.onDispatch = onDispatch
    }

    public func publish(_ tasks: [ActivityTask]) async throws {
        let messages = try tasks.map { task in
            var headers = ["keel-type": WireType.task.rawValue, "keel-version": wireVersion,
                           "keel-workflow-id": task.workflowId, "keel-activity-type": task.activityType]
            if let trace = task.trace { headers.merge(trace) { keel, _ in keel } }
            return AMQPMessage(
                exchange: publisher.topology.tasksExchange, routingKey: task.taskQueue, body: try Wire.encode(task),
                type: WireType.task.rawValue, messageId: task.attemptKey, headers: headers)
        }
        let counts = tasks.reduce(into: [String: Int]()) { $0[$1.taskQueue, default: 0] += 1 }
        try await publisher.publish(messages, taskQueues: Set(counts.keys))
        onDispatch(counts)
    }

    public func deadLetter(_ entries: [DeadLetterEntry]) async throws {
        let messages = try entries.map { entry in
            AMQPMessage(
                exchange: publisher.topology.deadLetterExchange, routingKey: entry.taskQueue, body: try Wire.encode(entry),
                type: WireType.deadLetter.rawValue, messageId: entry.id,
                headers: ["keel-type": WireType.deadLetter.rawValue, "keel-version": wireVersion,
                          "keel-workflow-id": entry.workflowId, "keel-run-id": entry.runId,
                          "keel-activity-type": entry.activityType,
                          "keel-origin": publisher.topology.queue(forTaskQueue: entry.taskQueue),
                          "keel-error": String("\(entry.failure.type): \(entry.failure.message)".prefix(1000))])
        }
        try await publisher.publish(messages)
    }
}

extension AMQPPublisher {
    /// Sends `delivery` to the dead-letter exchange with the reason it could not be processed,
    /// keeping its body and Keel headers.
    public func deadLetter(_ delivery: AMQPDelivery, from queue: String, reason: String) async throws {
        // Headers too large for a frame would make this publish fail too: such a message keeps
        // only Keel's type header.
        let size = delivery.headers.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        var headers = size <= MessageLimits().headers ? delivery.headers : delivery.headers.filter { $0.key == "keel-type" && $0.value.utf8.count < 64 }
        headers["keel-error"] = String(reason.prefix(1000))
        headers["keel-origin"] = queue
        try await publish([AMQPMessage(
            exchange: topology.deadLetterExchange, routingKey: queue, body: delivery.body, type: delivery.type,
            messageId: delivery.messageId, headers: headers)])
    }

    /// Publishes a wire message of `type` to `exchange`.
    public func send<T: Encodable>(
        _ type: WireType, _ body: T, exchange: String, routingKey: String, messageId: String? = nil
    ) async throws {
        try await publish([.wire(type, body, exchange: exchange, routingKey: routingKey, messageId: messageId)])
    }
}

extension AMQPMessage {
    /// A wire message of `type`: `body` as JSON, with Keel's type and version headers.
    public static func wire<T: Encodable>(
        _ type: WireType, _ body: T, exchange: String, routingKey: String, messageId: String? = nil
    ) throws -> AMQPMessage {
        AMQPMessage(
            exchange: exchange, routingKey: routingKey, body: try Wire.encode(body), type: type.rawValue,
            messageId: messageId, headers: ["keel-type": type.rawValue, "keel-version": wireVersion])
    }
}
