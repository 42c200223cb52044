import Foundation
import KeelAMQP
import KeelCore

/// One message in the dead-letter queue, as `keel dlq` shows and drains it.
public struct DeadLetterItem: Codable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// An activity that ended in failure, with its context (`entry`).
        case activity
        /// A message a process could not handle (undecodable, unknown type), kept as it was sent.
        case message
    }

    /// The activity entry's id, or the message id (a digest of the body when it has none).
    public var id: String
    public var kind: Kind
    /// Why it is here.
    public var reason: String
    /// The queue it came from.
    public var origin: String?
    /// The AMQP `type` of the message.
    public var messageType: String?
    /// For `activity` items: the activity, its input and every attempt's error.
    public var entry: DeadLetterEntry?
    /// For `message` items: the body as JSON when it parses, else as text, else base64.
    public var body: JSONValue?
    public var bodyText: String?
    public var bodyBase64: String?
    public var headers: [String: String]

    init(_ delivery: AMQPDelivery) {
        headers = delivery.headers
        messageType = delivery.wireType
        origin = delivery.headers["keel-origin"] ?? delivery.death?.queue
        if messageType == WireType.deadLetter.rawValue,
            let entry = try? Wire.decode(DeadLetterEntry.self, from: delivery.body, what: "dead letter")
        {
            kind = .activity
            id = entry.id
            self.entry = entry
            reason = "\(entry.failure.type): \(entry.failure.message)"
            if let retryState = entry.failure.retryState { reason += " (\(retryState.rawValue))" }
            return
        }
        kind = .message
        id = delivery.messageId ?? "sha-" + Self.digest(delivery.body)
        reason =
            delivery.headers["keel-error"]
            ?? delivery.death.map { "rejected by a consumer of \($0.queue) (\($0.reason))" } ?? "unknown"
        if let json = try? JSONDecoder().decode(JSONValue.self, from: delivery.body) {
            body = json
        } else if let text = String(data: delivery.body, encoding: .utf8) {
            bodyText = text
        } else {
            bodyBase64 = delivery.body.base64EncodedString()
        }
    }

    /// FNV-1a, 64 bits, hex: a stable name for a message that came without an id.
    static func digest(_ data: Data) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}

/// What `keel dlq` does to the dead-letter queue (`<namespace>.dead`): list without consuming,
/// drain to a JSON Lines file, redrive, discard. Each call uses its own connection; messages it
/// looks at but does not take go back to the queue when it closes.
public struct DeadLetterQueue: Sendable {
    public let url: AMQPURL
    public let topology: Topology

    public init(url: AMQPURL, topology: Topology = .fromEnvironment()) {
        self.url = url
        self.topology = topology
    }

    /// Every item in the queue, oldest first, up to `limit`. Nothing is removed.
    public func list(limit: Int = 10_000) throws -> [DeadLetterItem] {
        let connection = try open()
        defer { connection.close() }  // unacknowledged: every message returns to the queue
        var items: [DeadLetterItem] = []
        while items.count < limit, let delivery = try connection.get(queue: topology.deadLetterQueue) {
            items.append(DeadLetterItem(delivery))
        }
        return items
    }

    /// Moves every item into `path` (JSON Lines, appended): each line is written and flushed to
    /// disk before its message is acknowledged, so a crash loses nothing. Returns how many.
    @discardableResult
    public func drain(to path: String) throws -> Int {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw DeadLetterError(message: "cannot create \(path)")
            }
        }
        guard let file = FileHandle(forWritingAtPath: path) else { throw DeadLetterError(message: "cannot write \(path)") }
        defer { try? file.close() }
        try file.seekToEnd()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let connection = try open()
        defer { connection.close() }
        var count = 0
        while let delivery = try connection.get(queue: topology.deadLetterQueue) {
            var line = try encoder.encode(DeadLetterItem(delivery))
            line.append(0x0A)
            try file.write(contentsOf: line)
            try file.synchronize()
            try connection.ack(delivery.deliveryTag)
            count += 1
        }
        return count
    }

    /// What became of one id given to ``redrive(ids:all:client:)`` or ``discard(ids:client:)``.
    public struct Outcome: Sendable, Codable {
        public var id: String
        public var done: Bool
        public var detail: String

        public init(id: String, done: Bool, detail: String) {
            self.id = id
            self.done = done
            self.detail = detail
        }
    }

    /// Redrives items: a parked activity gets fresh attempts (the coordinator resumes its
    /// workflow), a message goes back to the queue it came from. An item is removed only once
    /// that succeeded; one that cannot be redriven stays, and its outcome says why.
    public func redrive(ids: Set<String>, all: Bool = false, client: KeelClient) async throws -> [Outcome] {
        try await take(ids: ids, all: all) { item, delivery, connection in
            switch item.kind {
            case .activity:
                guard let entry = item.entry, entry.parked else {
                    return Outcome(
                        id: item.id, done: false,
                        detail: "not parked: workflow \(item.entry?.workflowId ?? "?") already received this failure. "
                            + "Start a new run, or set parkOnExhaustion on the activity so that a redrive can resume its workflow"
                    )
                }
                try await client.redrive(workflowId: entry.workflowId, runId: entry.runId, activityId: entry.activityId)
                return Outcome(
                    id: item.id, done: true,
                    detail: "workflow \(entry.workflowId) resumes: \(entry.activityType) gets fresh attempts")
            case .message:
                if item.messageType == WireType.task.rawValue {
                    return Outcome(
                        id: item.id, done: false,
                        detail:
                            "a task attempt is owned by the coordinator, which has already ended it; redrive its activity entry if it is parked"
                    )
                }
                guard let origin = item.origin else {
                    return Outcome(id: item.id, done: false, detail: "the message does not say which queue it came from")
                }
                var headers = delivery.headers
                headers["keel-error"] = nil
                headers["keel-origin"] = nil
                try connection.publish(
                    AMQPMessage(
                        exchange: "", routingKey: origin, body: delivery.body, type: delivery.type,
                        messageId: delivery.messageId, headers: headers))
                try connection.waitForConfirms()
                return Outcome(id: item.id, done: true, detail: "republished to \(origin)")
            }
        }
    }

    /// Discards items: a parked activity's failure goes to its workflow, which continues with it;
    /// any other item is simply removed.
    public func discard(ids: Set<String>, all: Bool = false, client: KeelClient) async throws -> [Outcome] {
        try await take(ids: ids, all: all) { item, _, _ in
            if let entry = item.entry, entry.parked {
                try await client.discard(workflowId: entry.workflowId, runId: entry.runId, activityId: entry.activityId)
                return Outcome(id: item.id, done: true, detail: "workflow \(entry.workflowId) receives the failure")
            }
            return Outcome(id: item.id, done: true, detail: "removed")
        }
    }

    /// Walks the queue, calls `act` on the items named, acknowledges those it handled. Ids not
    /// found get an outcome saying so.
    private func take(
        ids: Set<String>, all: Bool,
        _ act: (DeadLetterItem, AMQPDelivery, AMQPConnection) async throws -> Outcome
    ) async throws -> [Outcome] {
        let reader = try open()
        defer { reader.close() }
        let writer = try open()
        defer { writer.close() }
        try writer.enableConfirms()
        var outcomes: [Outcome] = []
        var found: Set<String> = []
        while let delivery = try reader.get(queue: topology.deadLetterQueue) {
            let item = DeadLetterItem(delivery)
            guard all || ids.contains(item.id) else { continue }
            found.insert(item.id)
            let outcome: Outcome
            do {
                outcome = try await act(item, delivery, writer)
            } catch {
                outcomes.append(Outcome(id: item.id, done: false, detail: "\(error)"))
                continue
            }
            if outcome.done { try reader.ack(delivery.deliveryTag) }
            outcomes.append(outcome)
        }
        for id in ids.subtracting(found).sorted() {
            outcomes.append(Outcome(id: id, done: false, detail: "no such entry in \(topology.deadLetterQueue)"))
        }
        return outcomes
    }

    private func open() throws -> AMQPConnection {
        let connection = try AMQPConnection(url: url)
        try topology.declare(on: connection)
        return connection
    }
}

/// A dead-letter operation could not be carried out.
public struct DeadLetterError: KeelError {
    public var message: String
    public var errorType: String { "DeadLetterError" }
    public var isNonRetryable: Bool { true }
}
