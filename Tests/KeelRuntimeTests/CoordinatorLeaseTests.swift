import Foundation
import Keel
import KeelTestKit
import Testing

/// One active coordinator per namespace: a second one is refused with the reason, a standby
/// takes over when the active one dies.
@Suite("One coordinator per namespace", .tags(.integration), .timeLimit(.minutes(3)))
struct CoordinatorLeaseTests {
    @Test func aSecondCoordinatorIsRefusedAndAStandbyTakesOverWhenTheActiveOneDies() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()

        // By mistake: the same namespace, another database.
        let other = deployment.directory.appendingPathComponent("other.sqlite").path
        let refused = try await deployment.keel(["coordinator", "--db", other])
        #expect(refused.status != 0)
        #expect(
            refused.output.contains("another coordinator is active on namespace \(deployment.topology.namespace)"),
            "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: other), "it opened no database")

        // A standby on the same database waits...
        let orphan = JSONValue.object(["activityType": .string("noop"), "taskQueue": .string("orphan"), "input": .integer(1)])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "handed-over", input: Payload(encoding: orphan, field: "input")))
        let active = try #require(deployment.coordinator)
        let standbyLog = deployment.directory.appendingPathComponent("standby.log")
        let standby = try KeelProcess(["coordinator", "--standby"], environment: deployment.environment, log: standbyLog)
        func standbyText() -> String { (try? String(contentsOf: standbyLog, encoding: .utf8)) ?? "" }
        #expect(await eventually(20) { standbyText().contains("waiting to take over") }, "\(standbyText())")
        #expect(!standbyText().contains("coordinator running"))

        // ...and takes over when the active one is killed: it recovers the open run and finishes it.
        let killedAt = Date()
        try await offPool { active.kill() }
        #expect(await eventually(30) { standbyText().contains("coordinator running") }, "\(standbyText())")
        let tookOver = Date().timeIntervalSince(killedAt)
        #expect(standbyText().contains("recovered 1 open runs"), "\(standbyText())")
        try deployment.startWorker(queue: "orphan")
        #expect(try await deployment.client.waitForResult(workflowId: "handed-over", timeout: 30).status == .completed)
        print("standby took over \(String(format: "%.2f", tookOver)) s after the kill")
        // Stopped here, not in a `defer` on a detached thread: the test process could exit first
        // and leave it running.
        try await offPool { standby.terminate() }
    }

    /// Fencing: an active coordinator paused (`kill -STOP`) until its lease lapsed and a standby
    /// on the same history took over writes nothing when it resumes: its next commit finds a later
    /// epoch and it stops; everything completes once, through the standby.
    @Test func aPausedCoordinatorWritesNothingAfterAStandbyTookOver() async throws {
        let deployment = try Deployment()
        deployment.extraEnvironment["KEEL_LEASE_HEARTBEAT"] = "1"
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        let store = try deployment.store()
        let first = try #require(try store.currentEpoch())
        let active = try #require(deployment.coordinator)
        let standbyLog = deployment.directory.appendingPathComponent("standby.log")
        let standby = try KeelProcess(["coordinator", "--standby"], environment: deployment.environment, log: standbyLog)
        func standbyText() -> String { (try? String(contentsOf: standbyLog, encoding: .utf8)) ?? "" }
        #expect(await eventually(20) { standbyText().contains("waiting to take over") }, "\(standbyText())")

        kill(active.process.processIdentifier, SIGSTOP)
        let pausedAt = Date()
        #expect(await eventually(30) { standbyText().contains("coordinator running") }, "\(standbyText())")
        let tookOver = Date().timeIntervalSince(pausedAt)
        let second = try #require(try store.currentEpoch())
        #expect(second.epoch > first.epoch, "the standby took a later epoch")
        #expect(second.holder != first.holder)

        // Starts published now reach both: the paused coordinator's consumers are still
        // registered, and it finds its share waiting when it resumes.
        let requests = try (1...20).map {
            StartRequest(
                workflowType: "bench-sequential", workflowId: "fenced-\($0)", input: try Payload(encoding: 3, field: "input"))
        }
        try await deployment.client.start(requests)
        try await Task.sleep(for: .milliseconds(500))
        kill(active.process.processIdentifier, SIGCONT)
        try deployment.startWorker(concurrency: 8)
        for request in requests {
            #expect(try await deployment.client.waitForResult(workflowId: request.workflowId, timeout: 60).status == .completed)
        }
        #expect(await eventually(30) { !active.exists }, "the resumed coordinator stopped")
        let activeLog =
            (try? String(contentsOf: deployment.directory.appendingPathComponent("coordinator.log"), encoding: .utf8)) ?? ""
        #expect(
            activeLog.contains("writes nothing more") || activeLog.contains("another coordinator took namespace"), "\(activeLog)")
        #expect(try store.currentEpoch()?.epoch == second.epoch, "nobody took the history back")
        // Each step ran once: nothing the fenced coordinator held was run twice.
        let executions = deployment.executions.filter { $0.workflowId.hasPrefix("fenced-") }
        #expect(executions.count == 60, "\(executions.count) executions")
        #expect(Set(executions.map { "\($0.runId)/\($0.activityId)" }).count == 60)
        let stop = activeLog.split(separator: "\n").first { $0.contains("writes nothing more") || $0.contains("took namespace") }
        print(
            "the standby took over \(String(format: "%.2f", tookOver)) s after the active coordinator was paused; it stopped: \(stop ?? "?")"
        )
        try await offPool { standby.terminate() }
    }
}
