import Foundation
import Keel
import KeelTestKit
import Testing

/// `keel bench floor` runs against the real broker and ends with its machine-readable line (its
/// figures are for docs/benchmarks.md, never asserted here: machines differ).
@Suite("Broker floor bench", .tags(.integration), .timeLimit(.minutes(2)))
struct BrokerFloorTests {
    @Test func theFloorBenchReportsStepsPerSecondAndLatencies() async throws {
        // The broker of the test run (KEEL_AMQP_URL or KEEL_AMQP_PORT, inherited).
        let result = try await runToEnd(
            KeelProcess.binary, ["bench", "floor", "--steps", "2000", "--sequential-steps", "100"], environment: [:])
        #expect(result.status == 0, "\(result.output)")
        let line = try #require(result.output.split(separator: "\n").last.map(String.init))
        let fields = Dictionary(
            uniqueKeysWithValues: line.split(separator: " ").compactMap { pair -> (String, Double)? in
                let parts = pair.split(separator: "=")
                guard parts.count == 2, let value = Double(parts[1]) else { return nil }
                return (String(parts[0]), value)
            })
        #expect(Set(fields.keys) == ["floor_steps_per_s", "floor_p50_ms", "floor_p99_ms"], "\(line)")
        #expect(fields.values.allSatisfy { $0 > 0 }, "\(line)")
        #expect((fields["floor_p50_ms"] ?? 0) <= (fields["floor_p99_ms"] ?? 0))
    }
}
