import Foundation
import Testing

@testable import KeelCore

/// The quick test for a key before a payload is decoded for a convention (`usage`, `tries`).
@Suite("Payload keys", .tags(.unit))
struct PayloadTests {
    let usage = Payload.quotedKey("usage")

    @Test func aKeyIsFoundWhereverItStandsAndNowhereElse() {
        #expect(Payload(data: Data(#"{"usage":{}}"#.utf8)).mentions(usage))
        #expect(Payload(data: Data(#"{"text":"hi","usage":1}"#.utf8)).mentions(usage))
        #expect(Payload(data: Data(#"["a","usage"]"#.utf8)).mentions(usage))
        // A shorter or longer name, or the name unquoted: not the key.
        #expect(!Payload(data: Data(#"{"usage":1}"#.utf8)).mentions(Payload.quotedKey("usag")))
        #expect(!Payload(data: Data(#"{"usages":1}"#.utf8)).mentions(usage))
        #expect(!Payload(data: Data("usage".utf8)).mentions(usage))
        #expect(!Payload(data: Data()).mentions(usage))
        #expect(!Payload(data: Data("\"us".utf8)).mentions(usage))
    }

    @Test func aPayloadCutFromLargerBytesIsSearchedWithinItsOwnBytes() {
        let bytes = Data(#"xx{"usage":{"inputTokens":3}}yy"usage""#.utf8)
        let inner = Payload(data: bytes[2..<29])
        #expect(inner.mentions(usage))
        #expect(!Payload(data: bytes[2..<9]).mentions(usage), "the key straddles the end of the slice")
        #expect(Spend.reported(in: inner)?.inputTokens == 3)
    }
}
