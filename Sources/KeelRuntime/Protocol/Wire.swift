import Foundation
import KeelAMQP
import KeelCore

/// Message types on the wire (the AMQP `type` property and the `keel-type` header).
/// docs/protocol.md describes every body.
public enum WireType: String, Sendable, CaseIterable {
    // keel.jobs
    case start, signal, cancel, terminate, query, describe, redrive, discard, unblock
    case scheduleCreate = "schedule-create"
    case scheduleList = "schedule-list"
    case scheduleDescribe = "schedule-describe"
    case schedulePause = "schedule-pause"
    case scheduleUnpause = "schedule-unpause"
    case scheduleTrigger = "schedule-trigger"
    case scheduleDelete = "schedule-delete"
    // keel.q.<queue>
    case task
    // keel.results
    case started, redelivered, claim, heartbeat, result, reports
    // keel.dead
    case deadLetter = "dead-letter"
    // keel.control
    case cancelActivity = "cancel-activity"
    case coordinatorEpoch = "coordinator-epoch"
}

extension WireType {
    /// The types the coordinator takes on `keel.jobs`.
    public static let jobs: [WireType] =
        [.start, .signal, .cancel, .terminate, .query, .describe, .redrive, .discard, .unblock]
        + scheduleJobs
    /// The jobs that manage schedules (body: ``ScheduleJob``).
    public static let scheduleJobs: [WireType] = [
        .scheduleCreate, .scheduleList, .scheduleDescribe, .schedulePause, .scheduleUnpause, .scheduleTrigger,
        .scheduleDelete
    ]
}

/// The protocol version in the `keel-version` header of every message but a task.
public let wireVersion = "1"

/// The version in a task's `keel-version` header, its only `keel-*` header: version 2 dropped
/// the task's `keel-type`, `keel-workflow-id` and `keel-activity-type` headers (the `type`
/// property and the body carry them), which cost the broker and both processes work on every
/// step (docs/protocol.md, "Versioning").
public let taskWireVersion = "2"

/// JSON coding for wire bodies: times are seconds since 1970 (exact, and easy for any language).
public enum Wire {
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .secondsSince1970
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        do {
            return try decoder.decode(T.self, from: data)
        } catch let error as DecodingError {
            throw WireError(message: "\(what) body is not valid: \(describe(error))")
        } catch {
            throw WireError(message: "\(what) body is not valid JSON: \(error)")
        }
    }

    /// Reads a whole wire body with `read`; what is wrong with it is a ``WireError`` naming the
    /// message (`what`), the member and the byte.
    static func read<T>(_ body: Data, what: String, _ read: (inout JSONReader) throws -> T) throws -> T {
        var reader = JSONReader(body)
        do {
            let value = try read(&reader)
            try reader.end()
            return value
        } catch let failure as JSONReader.Failure {
            throw WireError(message: "\(what) body is not valid: \(failure.description)")
        }
    }

    /// What is wrong, in a line: the field and the problem.
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map(\.stringValue).joined(separator: ".")
            return keys.isEmpty ? "" : " at '\(keys)'"
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing field '\(key.stringValue)'\(path(context))"
        case .typeMismatch(let type, let context): return "expected \(type)\(path(context))"
        case .valueNotFound(let type, let context): return "null where \(type) is required\(path(context))"
        case .dataCorrupted(let context): return "\(context.debugDescription)\(path(context))"
        @unknown default: return "\(error)"
        }
    }
}

/// A message could not be understood.
public struct WireError: KeelError {
    public var message: String
    public var errorType: String { "BadMessage" }
    public var isNonRetryable: Bool { true }
    public init(message: String) { self.message = message }
}

extension AMQPMessage {
    /// A wire message of `type`: `body` as JSON, with Keel's type and version headers.
    /// ``WireType/jobs``, for a lookup per message built.
    private static let jobTypes = Set(WireType.jobs)

    public static func wire<T: Encodable>(
        _ type: WireType, _ body: T, exchange: String, routingKey: String, messageId: String? = nil
    ) throws -> AMQPMessage {
        wire(type, body: try Wire.encode(body), exchange: exchange, routingKey: routingKey, messageId: messageId)
    }

    /// A wire message of `type` whose JSON `body` is written already (``JSONWriter``).
    static func wire(
        _ type: WireType, body: Data, exchange: String, routingKey: String, messageId: String? = nil
    )
        -> AMQPMessage
    {
        var message = AMQPMessage(
            exchange: exchange, routingKey: routingKey, body: body, type: type.rawValue,
            messageId: messageId, headers: ["keel-type": type.rawValue, "keel-version": wireVersion])
        // Jobs carry their publisher's user, checked by RabbitMQ: the coordinator lets only
        // operators (`--operators`) cancel, terminate, redrive, discard, unblock and manage schedules.
        message.signedByUser = jobTypes.contains(type)
        return message
    }
}

extension AMQPDelivery {
    /// The Keel message type: the AMQP `type` property, else the `keel-type` header.
    public var wireType: String? { type ?? headers["keel-type"] }

    /// Bytes of all string headers together (names and values), as the header limit counts them.
    var headerBytes: Int { headers.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } }
}

extension JSONReader {
    /// The value of a required member, once its object is read. Here, beside the decoders that
    /// call it, so that the compiler specializes it for each type: from KeelCore, even
    /// `@inlinable`, it was called unspecialized (27 calls in the release binary, `objdump -d`)
    /// and looked up `T?`'s metadata on every call, a quarter of a worker's time reading a task
    /// (`perf record` during `bench latency`).
    func required<T>(_ value: T?, _ name: String) throws -> T {
        guard let value else { throw missingField(name) }
        return value
    }
}
