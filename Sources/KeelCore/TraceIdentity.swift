import Foundation

/// The W3C trace a workflow run's spans belong to, derived from its run id so that every
/// process (and every restart of the coordinator) puts them into the same trace without storing
/// anything: the trace id is the run id's 32 hex digits (run ids are UUIDs; any other string is
/// hashed), the run's root span id a hash of it.
public enum TraceIdentity {
    /// 32 lowercase hex digits.
    public static func traceId(runId: String) -> String {
        let hex = runId.lowercased().filter { $0 != "-" }
        if hex.count == 32, hex.allSatisfy(\.isHexDigit), hex != String(repeating: "0", count: 32) { return hex }
        return hexDigits(fnv1a(runId, seed: 0xcbf2_9ce4_8422_2325)) + hexDigits(fnv1a(runId, seed: 0x8422_2325_cbf2_9ce4))
    }

    /// 16 lowercase hex digits: the span that stands for the whole run.
    public static func rootSpanId(runId: String) -> String {
        hexDigits(max(fnv1a("run:" + runId, seed: 0xcbf2_9ce4_8422_2325), 1))
    }

    /// A `traceparent` header value (version 00, sampled) whose parent is the run's root span.
    public static func traceparent(runId: String) -> String {
        "00-\(traceId(runId: runId))-\(rootSpanId(runId: runId))-01"
    }

    private static func fnv1a(_ text: String, seed: UInt64) -> UInt64 {
        var hash = seed
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }

    private static func hexDigits(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
