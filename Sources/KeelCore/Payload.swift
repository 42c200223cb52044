import Foundation

/// A JSON-encoded value as it is stored in history and sent on the wire.
///
/// Payloads stay opaque bytes until the code that knows their type decodes them, so replay never
/// pays for decoding values it does not need.
public struct Payload: Sendable, Hashable {
    /// The UTF-8 JSON bytes.
    public var data: Data

    public init(data: Data) { self.data = data }

    /// Whether the JSON text holds `key` (its quoted name, ``quotedKey(_:)``): the test before
    /// decoding a convention (`usage`, `tries`, `carriedSpend`) most payloads do not carry.
    /// Foundation's `Data.range(of:)` took 2.7 % of the coordinator's CPU in `bench throughput`
    /// for these tests alone; this looks for the key's first byte with `memchr`.
    public func mentions(_ key: [UInt8]) -> Bool {
        guard let first = key.first else { return true }
        return data.withUnsafeBytes { text in
            key.withUnsafeBytes { key in
                guard let start = text.baseAddress, let wanted = key.baseAddress else { return false }
                var offset = 0
                // The key can start no later than `text.count - key.count`.
                while text.count - offset >= key.count {
                    guard let hit = memchr(start + offset, Int32(first), text.count - offset - key.count + 1) else {
                        return false
                    }
                    if memcmp(hit, wanted, key.count) == 0 { return true }
                    offset = UnsafeRawPointer(hit) - start + 1
                }
                return false
            }
        }
    }

    /// The bytes of `name` between double quotes, as ``mentions(_:)`` looks for a key.
    public static func quotedKey(_ name: String) -> [UInt8] { Array("\"\(name)\"".utf8) }

    /// The size limit applied when nothing else is configured: 2 MB.
    public static let defaultSizeLimit = 2 * 1024 * 1024

    /// Encodes `value` as JSON; `field` names the value in the error when it is too large (worked
    /// out only then: the activities and workflows of every step name theirs after their type).
    public init<T: Encodable>(
        encoding value: T, field: @autoclosure () -> String, limit: Int = Payload.defaultSizeLimit
    ) throws {
        let data: Data
        do {
            data = try JSONCoding.encoder.encode(value)
        } catch {
            let field = field()
            throw PayloadError(
                field: field, kind: .encodingFailed,
                message: "\(field) could not be encoded as JSON: \(error)")
        }
        guard data.count <= limit else {
            let field = field()
            throw PayloadError(
                field: field, kind: .tooLarge,
                message: "\(field) is \(data.count) bytes, over the \(limit)-byte payload limit; "
                    + "store large data elsewhere (a file, an object store) and pass a reference")
        }
        self.data = data
    }

    /// Decodes the JSON as `T`; `field` names the value in the error (worked out only then).
    public func decode<T: Decodable>(_ type: T.Type, field: @autoclosure () -> String = "payload") throws -> T {
        do {
            return try JSONCoding.decoder.decode(T.self, from: data)
        } catch {
            let field = field()
            throw PayloadError(
                field: field, kind: .decodingFailed,
                message: "\(field) is not a valid \(T.self): \(error). JSON was: \(preview)")
        }
    }

    /// The JSON text, shortened for messages.
    public var preview: String {
        let text = String(decoding: data.prefix(200), as: UTF8.self)
        return data.count > 200 ? text + "…" : text
    }

    /// The JSON text.
    public var json: String { String(decoding: data, as: UTF8.self) }

    /// The JSON `null` payload, the result of a workflow or activity that returns nothing.
    public static let null = Payload(data: Data("null".utf8))
}

extension Payload: Codable {
    // Stored and exported as the JSON value itself, so histories stay readable.
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let value = try container.decode(JSONValue.self)
        self.data = try JSONCoding.encoder.encode(value)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(try JSONCoding.decoder.decode(JSONValue.self, from: data))
    }
}

/// Why a payload could not be made or read.
public struct PayloadError: KeelError {
    public enum Kind: String, Sendable { case tooLarge, encodingFailed, decodingFailed }
    public var field: String
    public var kind: Kind
    public var message: String
    public init(field: String, kind: Kind, message: String) {
        self.field = field
        self.kind = kind
        self.message = message
    }
    public var errorType: String {
        switch kind {
        case .tooLarge: "PayloadTooLarge"
        case .encodingFailed: "PayloadNotEncodable"
        case .decodingFailed: "PayloadNotDecodable"
        }
    }
    public var isNonRetryable: Bool { true }
    public var description: String { message }
}

/// Shared JSON coders. Foundation's coders are safe to share once configured.
enum JSONCoding {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()
    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}

/// Any JSON value; lets payloads be embedded verbatim in exported histories.
public enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    /// Integers are kept exact (a 64-bit seed must not pass through a Double).
    case integer(Int64)
    case unsigned(UInt64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(UInt64.self) {
            self = .unsigned(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .unsigned(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
