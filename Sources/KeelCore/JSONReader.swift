import Foundation

/// Reads JSON by hand, field by field into the value, for the messages every step receives
/// (tasks, worker reports): Foundation's `JSONDecoder` took a seventh of a worker's CPU for its
/// tasks alone. It takes what RFC 8259 allows and nothing else; any other input, however cut or
/// garbled, ends in a ``Failure`` that says where, never in a crash. Payloads are kept as the
/// bytes they arrived as, once checked to be JSON.
package struct JSONReader {
    /// What is wrong with the input, and where.
    package struct Failure: Error, Sendable {
        package var message: String
        /// Where in the input, counted in bytes from 0.
        package var offset: Int
        /// The member the failure is in, outermost first (`trace.traceparent`).
        package var path: [String] = []

        package init(message: String, offset: Int, path: [String] = []) {
            self.message = message
            self.offset = offset
            self.path = path
        }

        package var description: String {
            (path.isEmpty ? message : "\(message) at '\(path.joined(separator: "."))'") + " (byte \(offset))"
        }

        package func inside(_ key: String) -> Failure {
            var failure = self
            failure.path.insert(key, at: 0)
            return failure
        }
    }

    /// Deeper nesting is refused (as Foundation's decoder does), so that no input runs the stack out.
    package static let maximumDepth = 512

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    /// How far the reader is, in bytes.
    package var offset: Int { index }

    package init(_ bytes: [UInt8]) { self.bytes = bytes }
    package init(_ data: Data) { self.init(Array(data)) }

    // MARK: Values

    /// Reads an object; `member` is called with each key and must read its value.
    package mutating func readObject(_ member: (String, inout JSONReader) throws -> Void) throws {
        try expect(UInt8(ascii: "{"), "expected an object")
        try descend()
        defer { depth -= 1 }
        if try peek() == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            guard try peek() == UInt8(ascii: "\"") else { throw failure("expected a member name") }
            let key = try readString()
            try expect(UInt8(ascii: ":"), "expected ':' after a member name")
            do {
                try member(key, &self)
            } catch let error as Failure {
                throw error.inside(key)
            }
            switch try next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "}"): return
            default:
                index -= 1
                throw failure("expected ',' or '}' in an object")
            }
        }
    }

    /// Reads an array; `element` is called once per element and must read it.
    package mutating func readArray(_ element: (inout JSONReader) throws -> Void) throws {
        try expect(UInt8(ascii: "["), "expected an array")
        try descend()
        defer { depth -= 1 }
        if try peek() == UInt8(ascii: "]") {
            index += 1
            return
        }
        var position = 0
        while true {
            do {
                try element(&self)
            } catch let error as Failure {
                throw error.inside("\(position)")
            }
            position += 1
            switch try next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "]"): return
            default:
                index -= 1
                throw failure("expected ',' or ']' in an array")
            }
        }
    }

    /// An array whose elements `element` reads.
    package mutating func readList<Element>(of element: (inout JSONReader) throws -> Element) throws -> [Element] {
        var values: [Element] = []
        try readArray { reader in values.append(try element(&reader)) }
        return values
    }

    package mutating func readStringArray() throws -> [String] {
        var values: [String] = []
        try readArray { element in values.append(try element.readString()) }
        return values
    }

    /// An object whose members are all strings.
    package mutating func readStringObject() throws -> [String: String] {
        var values: [String: String] = [:]
        try readObject { key, value in values[key] = try value.readString() }
        return values
    }

    /// Consumes a `null` if one comes next.
    package mutating func readNull() throws -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    package mutating func readBool() throws -> Bool {
        switch try peek() {
        case UInt8(ascii: "t"):
            try literal("true")
            return true
        case UInt8(ascii: "f"):
            try literal("false")
            return false
        default: throw failure("expected true or false")
        }
    }

    package mutating func readString() throws -> String {
        try expect(UInt8(ascii: "\""), "expected a string")
        let start = index
        // Most strings have no escape: taken as they are. Most are ASCII too, and need no
        // validation (`String(validating:)` went through generic code that looked up type
        // metadata on every call: 2.5 % of a worker's CPU in `bench throughput`).
        var ascii = true
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                defer { index += 1 }
                if ascii { return String(decoding: bytes[start..<index], as: UTF8.self) }
                return try text(bytes[start..<index])
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw failure("a control character in a string must be escaped") }
            if byte >= 0x80 { ascii = false }
            index += 1
        }
        var unescaped = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""): return try text(unescaped[...])
            case UInt8(ascii: "\\"): try unescape(into: &unescaped)
            case ..<0x20:
                index -= 1
                throw failure("a control character in a string must be escaped")
            default: unescaped.append(byte)
            }
        }
        throw failure("unterminated string")
    }

    /// An integer; a number with a fraction or exponent is taken only when it is a whole number
    /// in range.
    package mutating func readInteger() throws -> Int64 {
        let start = index
        let (span, integral) = try number(expected: "expected an integer")
        if integral, let value = Int64(String(decoding: span, as: UTF8.self)) { return value }
        if let value = Double(String(decoding: span, as: UTF8.self)), value.rounded(.towardZero) == value,
            value >= -9_223_372_036_854_775_808, value < 9_223_372_036_854_775_808
        {
            return Int64(value)
        }
        index = start
        throw failure("expected an integer (64 bits)")
    }

    package mutating func readNumber() throws -> Double {
        let start = index
        let (span, _) = try number(expected: "expected a number")
        guard let value = Double(String(decoding: span, as: UTF8.self)), value.isFinite else {
            index = start
            throw failure("number out of range")
        }
        return value
    }

    /// A time, in seconds since 1970.
    package mutating func readDate() throws -> Date { Date(timeIntervalSince1970: try readNumber()) }

    /// One whole value, checked, as the bytes it is written with.
    package mutating func readRaw() throws -> Data {
        try skipWhitespace()
        let start = index
        try skipValue()
        return Data(bytes[start..<index])
    }

    /// Reads past one value of any kind, checking it.
    package mutating func skipValue() throws {
        switch try peek() {
        case UInt8(ascii: "{"): try readObject { _, reader in try reader.skipValue() }
        case UInt8(ascii: "["): try readArray { reader in try reader.skipValue() }
        case UInt8(ascii: "\""): _ = try readString()
        case UInt8(ascii: "t"), UInt8(ascii: "f"): _ = try readBool()
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try number(expected: "expected a value")
        }
    }

    /// Checks that nothing but whitespace is left.
    package mutating func end() throws {
        try skipWhitespace(allowingEnd: true)
        guard index == bytes.count else { throw failure("unexpected text after the JSON value") }
    }

    /// The failure for a required member the object did not have.
    package func missingField(_ name: String) -> Failure { failure("missing field '\(name)'") }

    /// An `Int` member's value, read as a 64-bit integer.
    package mutating func readInt() throws -> Int {
        let start = index
        guard let value = Int(exactly: try readInteger()) else {
            index = start
            throw failure("integer out of range")
        }
        return value
    }

    // MARK: Pieces

    private mutating func descend() throws {
        depth += 1
        guard depth <= Self.maximumDepth else { throw failure("nested more than \(Self.maximumDepth) deep") }
    }

    private mutating func skipWhitespace(allowingEnd: Bool = false) throws {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
        if !allowingEnd { throw failure("unexpected end of the JSON text") }
    }

    /// The next byte that is not whitespace, not consumed.
    private mutating func peek() throws -> UInt8 {
        try skipWhitespace()
        return bytes[index]
    }

    private mutating func next() throws -> UInt8 {
        let byte = try peek()
        index += 1
        return byte
    }

    private mutating func expect(_ byte: UInt8, _ message: String) throws {
        guard try peek() == byte else { throw failure(message) }
        index += 1
    }

    private mutating func literal(_ word: StaticString) throws {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard bytes.count - index >= expected.count, bytes[index..<index + expected.count].elementsEqual(expected) else {
            throw failure("expected \(word)")
        }
        index += expected.count
    }

    /// Reads a number as RFC 8259 spells it; says whether it had neither fraction nor exponent.
    private mutating func number(expected: String) throws -> (ArraySlice<UInt8>, integral: Bool) {
        try skipWhitespace()
        let start = index
        var integral = true
        func digits(_ reader: inout JSONReader) -> Int {
            let first = reader.index
            while reader.index < reader.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(reader.bytes[reader.index])
            {
                reader.index += 1
            }
            return reader.index - first
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        let leadingZero = index < bytes.count && bytes[index] == UInt8(ascii: "0")
        let whole = digits(&self)
        guard whole > 0, !(leadingZero && whole > 1) else {
            index = start
            throw failure(expected)
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            integral = false
            guard digits(&self) > 0 else { throw failure("expected a digit after '.'") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            integral = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits(&self) > 0 else { throw failure("expected a digit in the exponent") }
        }
        return (bytes[start..<index], integral)
    }

    private func text(_ utf8: ArraySlice<UInt8>) throws -> String {
        guard let text = String(validating: utf8, as: UTF8.self) else { throw failure("a string is not valid UTF-8") }
        return text
    }

    /// After a backslash: appends what the escape stands for.
    private mutating func unescape(into output: inout [UInt8]) throws {
        guard index < bytes.count else { throw failure("unterminated string") }
        let byte = bytes[index]
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(byte)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hexQuad())
            if (0xD800..<0xDC00).contains(scalar) {
                // A high surrogate must be followed by an escaped low one.
                guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    throw failure("a lone surrogate in a string")
                }
                index += 2
                let low = UInt32(try hexQuad())
                guard (0xDC00..<0xE000).contains(low) else { throw failure("a lone surrogate in a string") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw failure("a lone surrogate in a string")
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw failure("an invalid \\u escape") }
            output.append(contentsOf: Array(String(Character(unicode)).utf8))
        default:
            index -= 1
            throw failure("an invalid escape in a string")
        }
    }

    private mutating func hexQuad() throws -> UInt16 {
        guard bytes.count - index >= 4 else { throw failure("an incomplete \\u escape") }
        var value: UInt16 = 0
        for byte in bytes[index..<index + 4] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("an invalid \\u escape")
            }
            value = value << 4 | UInt16(digit)
        }
        index += 4
        return value
    }

    private func failure(_ message: String) -> Failure {
        Failure(message: message, offset: index)
    }
}
