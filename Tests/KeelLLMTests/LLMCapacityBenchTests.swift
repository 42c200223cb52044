import Foundation
import Keel
import KeelTestKit
import Testing

/// `keel bench llm-capacity` runs its processes and the mock, and ends with its machine-readable
/// line (its figures are for docs/benchmarks.md; a run this small stays within the mock's limits).
@Suite("LLM capacity bench", .tags(.integration), .timeLimit(.minutes(3)))
struct LLMCapacityBenchTests {
    @Test func theBenchRunsPipelinesAgainstTheMockAndReports() async throws {
        let result = try await runToEnd(
            KeelProcess.binary,
            [
                "bench", "llm-capacity", "--workflows", "4", "--steps", "3", "--workers", "1", "--concurrency", "4",
                "--latency-min", "10", "--latency-max", "50", "--admission", "on"
            ], environment: [:])
        #expect(result.status == 0, "\(result.output)")
        let line = try #require(result.output.split(separator: "\n").last.map(String.init))
        let fields = Dictionary(
            uniqueKeysWithValues: line.split(separator: " ").compactMap { pair -> (String, String)? in
                let parts = pair.split(separator: "=")
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            })
        #expect(
            Set(fields.keys) == [
                "calls", "rate_limited", "rate_limited_off", "tokens_per_min", "limit_use_pct", "admission_wait_p95_ms",
                "budget_overshoot_calls"
            ], "\(line)")
        // Budgets of 80 % of what 3 calls need on average (2,424 tokens), each call reserved at its
        // prompt plus a 1,500-token cap: runs make 2 or 3 calls, the last at most one call over.
        let calls = Int(fields["calls"] ?? "") ?? 0
        #expect((8...12).contains(calls), "\(line)")
        #expect(fields["rate_limited"] == "0", "\(line)")
        #expect(Double(fields["budget_overshoot_calls"] ?? "") ?? 9 <= 1, "\(line)")
    }
}
