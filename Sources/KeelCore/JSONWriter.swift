import Foundation

/// Writes JSON by hand, for what every step writes (tasks, worker reports, activity records):
/// through Foundation's `JSONEncoder` these cost the coordinator a tenth of its CPU, and each
/// payload was parsed and written again on the way. The output is what `JSONEncoder` writes for
/// the same value, except that numbers may be spelled differently, payloads go out byte for
/// byte, and keys come in the order the caller writes them (sorted, for wire bodies).
package struct JSONWriter {
    package private(set) var bytes: [UInt8] = []
    /// Whether the object being written has no member yet (no comma before the next key).
    private var atFirstMember = true

    /// How times are written: seconds since 1970 on the wire; seconds since 2001 (Foundation's
    /// default, `Date`'s own encoding) in the history file's JSON columns.
    package enum Dates: Sendable { case since1970, sinceReferenceDate }
    package let dates: Dates

    package init(dates: Dates = .since1970, capacity: Int = 512) {
        self.dates = dates
        bytes.reserveCapacity(capacity)
    }

    package var data: Data { Data(bytes) }

    /// Writes an object whose members `body` writes.
    package mutating func object(_ body: (inout JSONWriter) throws -> Void) rethrows {
        bytes.append(UInt8(ascii: "{"))
        let outer = atFirstMember
        atFirstMember = true
        try body(&self)
        atFirstMember = outer
        bytes.append(UInt8(ascii: "}"))
    }

    /// Starts a member: its value is written next.
    package mutating func key(_ name: String) {
        if !atFirstMember { bytes.append(UInt8(ascii: ",")) }
        atFirstMember = false
        string(name)
        bytes.append(UInt8(ascii: ":"))
    }

    package mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: utf8[start..<index])
                escape(byte)
                start = index + 1
            }
            bytes.append(contentsOf: utf8[start...])
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func escape(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        default:
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: Array("u00".utf8))
            bytes.append(hex[Int(byte >> 4)])
            bytes.append(hex[Int(byte & 0xF)])
        }
    }

    package mutating func integer(_ value: some BinaryInteger) {
        bytes.append(contentsOf: String(value).utf8)
    }

    /// A finite number; an integral one is written without a fraction, as `JSONEncoder` does.
    package mutating func number(_ value: Double) throws {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "\(value) cannot be written as JSON"))
        }
        if value.rounded(.towardZero) == value, abs(value) < 9_007_199_254_740_992 {
            integer(Int64(value))
        } else {
            bytes.append(contentsOf: value.description.utf8)
        }
    }

    package mutating func date(_ value: Date) throws {
        try number(dates == .since1970 ? value.timeIntervalSince1970 : value.timeIntervalSinceReferenceDate)
    }

    package mutating func bool(_ value: Bool) {
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    /// The payload's JSON as it is, once checked to be one JSON value.
    package mutating func payload(_ value: Payload, field: String) throws {
        let raw = Array(value.data)
        var reader = JSONReader(raw)
        do {
            try reader.skipValue()
            try reader.end()
        } catch let error as JSONReader.Failure {
            throw PayloadError(
                field: field, kind: .encodingFailed,
                message: "\(field) is not valid JSON: \(error.description). JSON was: \(value.preview)")
        }
        bytes.append(contentsOf: raw)
    }

    // Members whose value may be absent: nothing is written for nil, as `encodeIfPresent` does.

    package mutating func member(_ name: String, _ value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }

    package mutating func member<Integer: BinaryInteger>(_ name: String, _ value: Integer?) {
        guard let value else { return }
        key(name)
        integer(value)
    }

    package mutating func member(_ name: String, _ value: Bool?) {
        guard let value else { return }
        key(name)
        bool(value)
    }

    package mutating func member(_ name: String, _ value: Double?) throws {
        guard let value else { return }
        key(name)
        try number(value)
    }

    package mutating func member(_ name: String, _ value: Date?) throws {
        guard let value else { return }
        key(name)
        try date(value)
    }

    package mutating func member(_ name: String, _ value: [String]?) {
        guard let value else { return }
        key(name)
        strings(value)
    }

    package mutating func member(_ name: String, _ value: [String: String]?) {
        guard let value else { return }
        key(name)
        strings(value)
    }

    package mutating func member(_ name: String, _ value: Payload?) throws {
        guard let value else { return }
        key(name)
        try payload(value, field: name)
    }

    /// JSON this process's own `JSONEncoder` wrote, as it is (not checked again).
    package mutating func raw(_ json: Data) {
        bytes.append(contentsOf: json)
    }

    /// An array whose elements `element` writes.
    package mutating func array<Element>(_ values: [Element], _ element: (inout JSONWriter, Element) throws -> Void) rethrows {
        bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            try element(&self, value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    package mutating func strings(_ values: [String]) {
        bytes.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// An object of strings, its keys sorted.
    package mutating func strings(_ values: [String: String]) {
        object { writer in
            for (key, value) in values.sorted(by: { $0.key < $1.key }) {
                writer.key(key)
                writer.string(value)
            }
        }
    }
}
