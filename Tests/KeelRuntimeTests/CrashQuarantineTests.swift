import Foundation
import Keel
import KeelTestKit
import Testing

/// Workflow code that crashes the coordinator process (a Swift trap cannot be caught): the run
/// is quarantined after two crashes in a row while every other run goes on. The test restarts
/// the coordinator as a supervisor would.
@Suite("Crash quarantine", .tags(.integration), .timeLimit(.minutes(6)))
struct CrashQuarantineTests {
    struct TrapInput: Codable {
        var steps: Int
        var trap: Bool
    }

    /// Restarts the coordinator each time it dies until `workflowId`'s run is blocked; returns
    /// how many times it died.
    private func superviseUntilBlocked(
        _ deployment: Deployment, _ workflowId: String, maximumCrashes: Int = 4
    ) async throws -> Int {
        var crashes = 0
        let store = try deployment.store()
        while crashes <= maximumCrashes {
            let coordinator = try #require(deployment.coordinator)
            let outcome = await eventually(60) {
                !coordinator.exists || (try? store.latestRun(workflowId: workflowId)?.status) == .blocked
            }
            #expect(outcome, "neither a crash nor a block within 60 s")
            if (try store.latestRun(workflowId: workflowId)?.status) == .blocked, coordinator.exists { return crashes }
            crashes += 1
            try deployment.startCoordinator()
        }
        return crashes
    }

    @Test func aRunWhoseCodeCrashesTheCoordinatorTwiceIsBlockedAndTheOthersGoOn() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 4)
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "bystander",
                input: Payload(encoding: StepsInput(steps: 6, milliseconds: 500), field: "input")))
        // Traps when the result of its first step arrives: a crash on a committed run.
        try await deployment.client.start(
            StartRequest(
                workflowType: "fault-trap", workflowId: "trap-later",
                input: Payload(encoding: TrapInput(steps: 1, trap: true), field: "input")))
        let crashes = try await superviseUntilBlocked(deployment, "trap-later")
        #expect(crashes == 2)

        let blocked = try #require(try deployment.store().latestRun(workflowId: "trap-later"))
        #expect(blocked.status == .blocked)
        #expect(blocked.failure?.type == "WorkflowCodeCrashed")
        #expect(
            blocked.failure?.message.contains("crashed the coordinator twice in a row") == true,
            "\(blocked.failure?.message ?? "")")
        #expect(
            blocked.failure?.message.contains("SIGILL") == true || blocked.failure?.message.contains("SIGTRAP") == true,
            "the trap's signal is named: \(blocked.failure?.message ?? "")")
        let bystander = try await deployment.client.waitForResult(workflowId: "bystander", timeout: 90)
        #expect(bystander.status == .completed)

        let listed = try await deployment.keel(["list", "--status", "blocked"])
        #expect(listed.output.contains("trap-later"), "\(listed.output)")
        let shown = try await deployment.keel(["show", "trap-later"])
        #expect(shown.output.contains("keel unblock trap-later"), "\(shown.output)")

        // Not from the coordinator that quarantined it: it runs the code that crashed.
        let early = try await deployment.keel(["unblock", "trap-later", "--timeout", "10"])
        #expect(early.status != 0)
        #expect(early.output.contains("deploy a fix and restart the coordinator"), "\(early.output)")

        // Restarted (with the same code: a fix that did not work), an unblock crashes it once
        // more; the next coordinator blocks the run at once, and refuses that unblock job when it
        // comes back.
        let log = deployment.directory.appendingPathComponent("coordinator.log")
        func logText() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        let quarantining = try #require(deployment.coordinator)
        try await offPool { quarantining.terminate() }
        try deployment.startCoordinator()
        #expect(await eventually(60) { logText().contains("coordinator running") })
        let unblock = try await deployment.keel(["unblock", "trap-later", "--timeout", "5"])
        #expect(unblock.status != 0, "the coordinator died answering: \(unblock.output)")
        let crashed = try #require(deployment.coordinator)
        #expect(await eventually(60) { !crashed.exists }, "the replay crashed the coordinator")
        try deployment.startCoordinator()
        #expect(await eventually(60) { logText().contains("coordinator running") })
        #expect(logText().contains("it happened 2 times in a row, so the run is quarantined"), "\(logText())")
        #expect(await eventually(30) { logText().contains("this one runs the same code") }, "\(logText())")
        #expect(deployment.coordinator?.exists == true)
        #expect(try deployment.store().latestRun(workflowId: "trap-later")?.status == .blocked)
    }

    @Test func aStartWhoseCodeCrashesTheCoordinatorIsRecordedBlockedWithoutRunningIt() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        // Traps as soon as it starts: its start is never committed before the crash.
        try await deployment.client.start(
            StartRequest(
                workflowType: "fault-trap", workflowId: "trap-at-start",
                input: Payload(encoding: TrapInput(steps: 0, trap: true), field: "input")))
        #expect(try await superviseUntilBlocked(deployment, "trap-at-start") == 2)
        let store = try deployment.store()
        let run = try #require(try store.latestRun(workflowId: "trap-at-start"))
        #expect(run.status == .blocked)
        #expect(try store.events(runId: run.runId).map(\.kind) == [.workflowStarted])
        // The jobs queue is served again.
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "fault-trap", workflowId: "no-trap",
                input: Payload(encoding: TrapInput(steps: 0, trap: false), field: "input")))
        let fine = try await deployment.client.waitForResult(workflowId: "no-trap", timeout: 30)
        #expect(fine.status == .completed)
    }
}
