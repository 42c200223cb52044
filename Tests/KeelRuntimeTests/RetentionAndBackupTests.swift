import Foundation
import Keel
import KeelTestKit
import Testing

/// Retention (closed runs deleted by age, in batches) and `keel backup` (a consistent copy of a
/// running coordinator's history that another coordinator recovers from).
@Suite("Retention and backups", .tags(.integration), .timeLimit(.minutes(3)))
struct RetentionAndBackupTests {
    @Test func pruningDeletesOnlyRunsClosedBeforeTheCutoffInBatches() async throws {
        let engine = try Engine()
        for index in 0..<5 {
            _ = try await engine.coordinator.start(
                StartRequest(workflowType: TwelveSteps.name, workflowId: "old-\(index)", input: .null))
        }
        try await engine.drain()
        let cutoff = engine.clock.now().addingTimeInterval(1)
        engine.clock.advance(by: 3600)
        _ = try await engine.coordinator.start(StartRequest(workflowType: TwelveSteps.name, workflowId: "new", input: .null))
        try await engine.drain()
        _ = try await engine.coordinator.start(
            StartRequest(
                workflowType: SleepThenApprove.name, workflowId: "open", input: try Payload(encoding: "x", field: "input")))
        let store = try SQLiteHistoryStore(path: engine.databasePath)
        #expect(try store.closedRunCount(closedBefore: cutoff) == 5)

        #expect(try store.pruneClosedRuns(closedBefore: cutoff, limit: 2) == 2)
        #expect(try store.pruneClosedRuns(closedBefore: cutoff, limit: 2) == 2)
        #expect(try store.pruneClosedRuns(closedBefore: cutoff, limit: 2) == 1)
        #expect(try store.pruneClosedRuns(closedBefore: cutoff, limit: 2) == 0)
        let left = try store.runs(status: nil, limit: 100).map(\.workflowId).sorted()
        #expect(left == ["new", "open"])
        // Nothing of the deleted runs is left behind; the others keep their histories.
        #expect(try store.latestRun(workflowId: "old-0") == nil)
        #expect(try !store.events(runId: try #require(try store.latestRun(workflowId: "new")).runId).isEmpty)
        // An open run is never deleted, however old.
        #expect(try store.pruneClosedRuns(closedBefore: engine.clock.now().addingTimeInterval(86_400 * 365)) == 1)
        #expect(try store.latestRun(workflowId: "open")?.status == .running)
    }

    @Test func theCoordinatorDeletesRunsOlderThanItsRetention() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator(["--retention", "2s"])
        try deployment.startWorker()
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-sequential", workflowId: "short-lived", input: try Payload(encoding: 2, field: "input")))
        // Not awaited: on a loaded machine this test's next poll can come after the run was
        // deleted (2 s after it closed). The coordinator's log says it deleted it; a run is only
        // deleted once closed.
        let store = try deployment.store()
        let orphan = JSONValue.object(["activityType": .string("noop"), "taskQueue": .string("orphan"), "input": .integer(1)])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "still-open", input: Payload(encoding: orphan, field: "input")))
        #expect(try await eventually(30) { try store.latestRun(workflowId: "short-lived") == nil }, "deleted after 2 s")
        #expect(try store.latestRun(workflowId: "still-open")?.status == .running)
        let logFile = deployment.directory.appendingPathComponent("coordinator.log")
        var log = ""
        #expect(
            await eventually(10) {
                log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
                return log.contains("retention: deleted 1 runs closed more than 2 s ago")
            }, "\(log)")

        let bad = try await deployment.keel(["coordinator", "--retention", "forever"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("--retention must be a duration such as 30d or 12h, or off, not 'forever'"), "\(bad.output)")
    }

    @Test func aBackupOfARunningCoordinatorRecoversInAnotherCoordinator() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "bench-sequential", workflowId: "done", input: try Payload(encoding: 3, field: "input")))
        #expect(try await deployment.client.waitForResult(workflowId: "done", timeout: 30).status == .completed)
        let orphan = JSONValue.object(["activityType": .string("noop"), "taskQueue": .string("orphan"), "input": .integer(1)])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "call-activity", workflowId: "waiting", input: Payload(encoding: orphan, field: "input")))

        let copy = deployment.directory.appendingPathComponent("backup.sqlite").path
        let backedUp = try await deployment.keel(["backup", "--out", copy])
        #expect(backedUp.status == 0, "\(backedUp.output)")
        #expect(backedUp.output.contains("integrity check ok"), "\(backedUp.output)")
        let again = try await deployment.keel(["backup", "--out", copy])
        #expect(again.status != 0)
        #expect(again.output.contains("it exists"), "\(again.output)")
        let copied = try SQLiteHistoryStore(path: copy)
        #expect(try copied.latestRun(workflowId: "done")?.status == .completed)
        #expect(try copied.latestRun(workflowId: "waiting")?.status == .running)

        // The original is lost; a coordinator on the copy takes over and finishes the open run.
        let original = try #require(deployment.coordinator)
        try await offPool { original.terminate() }
        try deployment.startCoordinator(["--db", copy])
        try deployment.startWorker(queue: "orphan")
        let finished = try await deployment.client.waitForResult(workflowId: "waiting", timeout: 60)
        #expect(finished.status == .completed, "\(finished.failure?.description ?? "")")
        #expect(try copied.latestRun(workflowId: "waiting")?.status == .completed, "on the copy")
    }

    /// A backup taken under load restores and recovers, including steps the copy holds as
    /// published and unstarted that ran, and were answered to the original coordinator, after
    /// the copy was taken: published again, they complete on the copy. Runs of 4 steps of
    /// 300 ms keep the workers busy meanwhile; 50 one-step runs on a queue served only after the
    /// backup make the case certain, whatever the timing.
    @Test func aBackupTakenUnderLoadRestoresAndRecovers() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 16)
        try deployment.startWorker(concurrency: 16)
        let load = (0..<200).map { "load-\($0)" }
        let input = try Payload(encoding: StepsInput(steps: 4, milliseconds: 300, heartbeats: false), field: "input")
        try await deployment.client.start(load.map { StartRequest(workflowType: "bench-steps", workflowId: $0, input: input) })
        let later = (0..<50).map { "later-\($0)" }
        let call = JSONValue.object(["activityType": .string("noop"), "taskQueue": .string("orphan"), "input": .integer(1)])
        let callInput = try Payload(encoding: call, field: "input")
        try await deployment.client.start(
            later.map { StartRequest(workflowType: "call-activity", workflowId: $0, input: callInput) })
        // Published (their outbox rows go once RabbitMQ confirmed them) and waiting there.
        let store = try deployment.store()
        #expect(
            try await eventually(60) {
                let waiting = try later.filter { id in
                    guard let run = try store.latestRun(workflowId: id) else { return false }
                    return try store.activities(runId: run.runId).first?.state == .scheduled
                }
                let unpublished = try store.outbox(skipping: []).filter { $0.workflowId.hasPrefix("later-") }
                return waiting.count == later.count && unpublished.isEmpty
            }, "the later runs' tasks are published")

        let copy = deployment.directory.appendingPathComponent("under-load.sqlite").path
        let backedUp = try await deployment.keel(["backup", "--out", copy])
        #expect(backedUp.status == 0, "\(backedUp.output)")
        #expect(backedUp.output.contains("integrity check ok"), "\(backedUp.output)")
        let copied = try SQLiteHistoryStore(path: copy)
        #expect(try copied.restorePoint() != nil)
        for id in later {
            let run = try #require(try copied.latestRun(workflowId: id), "\(id) is in the copy")
            #expect(try copied.activities(runId: run.runId).map(\.state) == [.scheduled], "\(id)")
        }
        let (openInCopy, completedInCopy) = (try copied.count(status: .running), try copied.count(status: .completed))

        // The later steps run now and are answered to the original; then it is lost (with what
        // it did after the copy), and a coordinator starts on the copy.
        try deployment.startWorker(queue: "orphan")
        #expect(
            try await eventually(60) { try later.allSatisfy { try store.latestRun(workflowId: $0)?.status == .completed } },
            "the original completed the later runs")
        let original = try #require(deployment.coordinator)
        try await offPool { original.terminate() }
        try deployment.startCoordinator(["--db", copy])
        #expect(try await eventually(30) { try copied.restorePoint() == nil }, "cleared once recovered")
        let settled = try await eventually(120) {
            try copied.count(status: .running) == 0 && copied.count(status: .completed) >= openInCopy + completedInCopy
        }
        #expect(
            settled,
            "\((try? copied.count(status: .running)) ?? -1) still open; \(openInCopy) were open and \(completedInCopy) completed in the copy"
        )
        #expect(try copied.count(status: .failed) == 0)
        for id in later {
            #expect(try copied.latestRun(workflowId: id)?.status == .completed, "\(id), answered to the original only")
        }
        for run in try copied.runs(status: .completed, limit: 1000) where run.workflowType == "bench-steps" {
            #expect(run.result?.json == "6", "\(run.workflowId): 0 + 1 + 2 + 3")
        }
    }
}
