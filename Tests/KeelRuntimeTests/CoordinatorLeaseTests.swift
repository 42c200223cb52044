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
}
