import Foundation
import Keel
import KeelTestKit
import Testing

/// Epochs on one history file: the coordinator that took the latest one writes; an earlier one's
/// commits fail and write nothing.
@Suite("History fencing")
struct HistoryFencingTests {
    @Test func onlyTheLatestEpochCommits() throws {
        let path = makeTemporaryDirectory("keel-fence").appendingPathComponent("keel.sqlite").path
        let paused = try SQLiteHistoryStore(path: path)
        let first = try paused.takeEpoch(holder: "host-a:1")
        let standby = try SQLiteHistoryStore(path: path)
        let second = try standby.takeEpoch(holder: "host-b:2")
        #expect(second > first)
        #expect(try standby.currentEpoch()?.holder == "host-b:2")

        var batch = StoreBatch()
        batch.runs = [
            RunRecord(
                workflowId: "w", runId: "r", workflowType: "t", status: .running, input: .null, requestId: nil,
                createdAt: Date(), randomSeed: 1, options: WorkflowOptions(), executionDeadline: nil)
        ]
        let refused = #expect(throws: StoreError.self) { try paused.commit(batch) }
        #expect(refused?.fenced == true)
        #expect(
            refused?.message.contains("another coordinator (host-b:2) took it over") == true, "\(String(describing: refused))")
        #expect(try standby.run(runId: "r") == nil, "the fenced commit wrote nothing")
        try standby.commit(batch)
        #expect(try standby.run(runId: "r")?.workflowId == "w")
        // A store that took no epoch (a tool reading the file) is not fenced.
        let tool = try SQLiteHistoryStore(path: path)
        #expect(throws: Never.self) { try tool.commit(StoreBatch()) }
    }
}
