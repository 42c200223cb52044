import Foundation
import Keel
import KeelTestKit
import Testing

/// Runs costing more than 3x the median of their type, in `keel list`, over a real SQLite file.
@Suite("Cost outliers", .tags(.integration), .timeLimit(.minutes(1)))
struct CostOutlierTests {
    static func record(_ id: String, type: String, cost: Double, at offset: Double) -> RunRecord {
        var run = RunRecord(
            workflowId: id, runId: "run-\(id)", workflowType: type, status: .completed, input: .null, requestId: nil,
            createdAt: Date(timeIntervalSince1970: 1_800_000_000 + offset), randomSeed: 1, options: WorkflowOptions(),
            executionDeadline: nil)
        run.spend = Spend(inputTokens: 1000, outputTokens: 100, costUSD: cost)
        return run
    }

    /// Run id → cost ratio of the flagged runs, as `SQLiteHistoryStore.runs(_:)` computes them.
    static func flagged(_ runs: [RunRecord]) -> [String: Double] {
        let medians = CostOutliers.medians(runs.map { (type: $0.workflowType, cost: $0.costUSD) })
        return runs.reduce(into: [:]) { flagged, run in flagged[run.runId] = CostOutliers.ratio(of: run, medians: medians) }
    }

    @Test func mediansAndFlagsPerWorkflowType() {
        let runs = [
            Self.record("a", type: "summarise", cost: 0.01, at: 0), Self.record("b", type: "summarise", cost: 0.02, at: 1),
            Self.record("c", type: "summarise", cost: 0.03, at: 2), Self.record("d", type: "summarise", cost: 0.07, at: 3),
            Self.record("e", type: "invoice", cost: 0.5, at: 4), Self.record("f", type: "invoice", cost: 1.4, at: 5),
            Self.record("free", type: "invoice", cost: 0, at: 6)
        ]
        #expect(
            CostOutliers.medians(runs.map { (type: $0.workflowType, cost: $0.costUSD) }) == ["summarise": 0.025, "invoice": 0.95])
        // 0.07 is 2.8x the median of 0.025: not flagged; nothing in invoice reaches 3x 0.95.
        #expect(Self.flagged(runs).isEmpty)
        let flagged = Self.flagged(runs + [Self.record("g", type: "summarise", cost: 0.2, at: 7)])
        #expect(Array(flagged.keys) == ["run-g"])
        #expect(abs(flagged["run-g"]! - 0.2 / 0.03) < 1e-9)
    }

    @Test func keelListSortsByCostAndShowsOutliers() async throws {
        let directory = makeTemporaryDirectory("keel-cost")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        var batch = StoreBatch()
        batch.runs = [
            Self.record("cheap-1", type: "summarise", cost: 0.01, at: 0),
            Self.record("cheap-2", type: "summarise", cost: 0.012, at: 1),
            Self.record("cheap-3", type: "summarise", cost: 0.011, at: 2),
            Self.record("runaway", type: "summarise", cost: 0.2, at: 3)
        ]
        try store.commit(batch)
        let environment = ["KEEL_DB": path]
        let sorted = try await runToEnd(KeelProcess.binary, ["list", "--sort", "cost"], environment: environment)
        #expect(sorted.status == 0, "\(sorted.output)")
        let lines = sorted.output.split(separator: "\n").dropFirst()
        #expect(
            lines.map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["runaway", "cheap-2", "cheap-3", "cheap-1"])
        // The median of 0.010, 0.011, 0.012 and 0.2 is 0.0115.
        #expect(lines.first?.contains("17.4x the median cost") == true, "\(sorted.output)")
        let outliers = try await runToEnd(KeelProcess.binary, ["list", "--cost-outliers"], environment: environment)
        #expect(outliers.output.split(separator: "\n").count == 2, "\(outliers.output)")
        let bad = try await runToEnd(KeelProcess.binary, ["list", "--sort", "price"], environment: environment)
        #expect(bad.status != 0)
        #expect(bad.output.contains("--sort is started or cost, not 'price'"))
    }
}
