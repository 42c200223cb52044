import Foundation
import Keel
import KeelTestKit
import Testing

/// Replays committed history files against the current code. `twelve-steps.golden.json` is a
/// complete run recorded by the engine; `twelve-steps.nondeterministic.json` is the same run
/// with step 5's activity type changed, as if the code that made it had been different.
///
/// To re-record the golden file after an intentional history format change:
/// `KEEL_RECORD_FIXTURES=1 swift test --filter ReplayFixtureTests`.
@Suite("Replay of recorded histories", .tags(.integration))
struct ReplayFixtureTests {
    static func fixture(_ name: String) throws -> HistoryExport {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures"))
        return try HistoryExport.decode(try Data(contentsOf: url), source: name)
    }

    @Test func goldenHistoryReplaysToTheRecordedResult() throws {
        if ProcessInfo.processInfo.environment["KEEL_RECORD_FIXTURES"] == "1" {
            try Self.record()
        }
        let history = try Self.fixture("twelve-steps.golden")
        let report = try HistoryReplayer(workflows: testWorkflows).replay(history)
        #expect(report.nondeterminism == nil)
        #expect(report.pendingCommands.isEmpty)
        let recorded = try #require(history.events.last?.payload)
        #expect(report.outcome == .completeWorkflow(result: recorded))
        #expect(history.events.count == 42)
    }

    @Test func nondeterministicHistoryIsReportedWithTheEventAndBothCommands() throws {
        let report = try HistoryReplayer(workflows: testWorkflows).replay(Self.fixture("twelve-steps.nondeterministic"))
        let divergence = try #require(report.nondeterminism)
        #expect(divergence.eventId == 14)
        #expect(divergence.recorded == "#14 activityScheduled seq=5 step-renamed")
        #expect(divergence.issued == "activityScheduled seq=5 step")
        #expect(report.outcome == nil)
    }

    @Test func exportRoundTripsExactly() async throws {
        let engine = try Engine()
        _ = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "x", input: "in"))
        try await engine.drain()
        let export = try engine.store.export(workflowId: "x")
        #expect(try HistoryExport.decode(export.encoded(), source: "memory") == export)
    }

    @Test func badFilesGetAClearError() {
        let error = #expect(throws: ReplayError.self) {
            try HistoryExport.decode(Data("{\"format\": 1}".utf8), source: "bad.json")
        }
        #expect(error?.message.hasPrefix("bad.json is not a Keel history export") == true)
    }

    /// Records the golden history through the real engine and derives the non-deterministic one.
    static func record() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<HistoryExport, any Error>!
        Task {
            do {
                let engine = try Engine()
                _ = try await engine.coordinator.start(try StartRequest(TwelveSteps.self, id: "golden", input: 12))
                try await engine.drain()
                result = .success(try engine.store.export(workflowId: "golden"))
            } catch { result = .failure(error) }
            done.signal()
        }
        done.wait()
        let golden = try result.get()
        try golden.encoded().write(to: directory.appendingPathComponent("twelve-steps.golden.json"))
        var broken = golden
        if let index = broken.events.firstIndex(where: { $0.kind == .activityScheduled && $0.ref == 5 }) {
            broken.events[index].name = "step-renamed"
        }
        try broken.encoded().write(to: directory.appendingPathComponent("twelve-steps.nondeterministic.json"))
    }
}
