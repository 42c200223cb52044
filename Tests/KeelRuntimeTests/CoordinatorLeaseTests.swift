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
        let (standby, _, tookOver) = try await Self.pauseUntilAStandbyTookOver(active, deployment)
        let second = try #require(try store.currentEpoch())
        #expect(second.epoch > first.epoch, "the standby took a later epoch")
        #expect(second.holder != first.holder)

        let (_, activeLog) = try await Self.startRunsAndResume(active, deployment)
        #expect(
            activeLog.contains("writes nothing more") || activeLog.contains("another coordinator took namespace"), "\(activeLog)")
        #expect(try store.currentEpoch()?.epoch == second.epoch, "nobody took the history back")
        Self.expectEachStepRanOnce(deployment)
        let stop = activeLog.split(separator: "\n").first { $0.contains("writes nothing more") || $0.contains("took namespace") }
        print(
            "the standby took over \(String(format: "%.2f", tookOver)) s after the active coordinator was paused; it stopped: \(stop ?? "?")"
        )
        try await offPool { standby.terminate() }
    }

    /// Fencing with the replicated history: the standby has a file of its own, so the paused
    /// coordinator's commits find no later epoch there. It must still act no more when it
    /// resumes: before anything leaves it (an ack, a reply, a task) it confirms its lease, finds
    /// it gone, and stops; what it committed to its own file after the takeover never reaches
    /// the log's followers (an older epoch than the takeover marker's). (Its lease watch, which
    /// looks every second, races that check after the resume: this test does not tell which of
    /// the two stopped it.)
    @Test func aPausedCoordinatorWithAFileOfItsOwnActsNoMoreAfterAStandbyTookOver() async throws {
        let (deployment, active, standby, standbyPath, standbyText, tookOver) = try await Self.replicatedAndTakenOver()
        #expect(standbyText.contains("caught up to transaction"), "\(standbyText)")

        let (requests, activeLog) = try await Self.startRunsAndResume(active, deployment)
        #expect(activeLog.contains("another coordinator took namespace"), "\(activeLog)")
        // Every run is in the standby's file, and each step ran once.
        let store = try SQLiteHistoryStore(path: standbyPath)
        for request in requests {
            #expect(try store.latestRun(workflowId: request.workflowId)?.status == .completed, "\(request.workflowId)")
        }
        Self.expectEachStepRanOnce(deployment)
        print(
            "with replication, the standby took over \(String(format: "%.2f", tookOver)) s after the active coordinator was paused"
        )
        try await offPool { standby.terminate() }
    }

    /// A fenced coordinator does not take the namespace back in a gap: the standby that took
    /// over loses its lease connection for a moment (paused until the broker dropped it), and
    /// the old coordinator resumes right then and finds the lease free. It reads in
    /// the holder record that the standby took over, and stops; the standby takes its lease back
    /// and goes on, and every run completes once.
    @Test func aFencedCoordinatorDoesNotTakeBackALeaseItsStandbyLostForAMoment() async throws {
        let (deployment, active, standby, _, _, _) = try await Self.replicatedAndTakenOver()
        let standbyLog = deployment.directory.appendingPathComponent("standby.log")
        func standbyText() -> String { (try? String(contentsOf: standbyLog, encoding: .utf8)) ?? "" }
        let activeLog = deployment.directory.appendingPathComponent("coordinator.log")
        func activeText() -> String { (try? String(contentsOf: activeLog, encoding: .utf8)) ?? "" }

        kill(standby.process.processIdentifier, SIGSTOP)
        #expect(await eventually(30) { Self.leaseIsFree(deployment) }, "the broker dropped the paused standby's lease")
        kill(active.process.processIdentifier, SIGCONT)
        #expect(await eventually(30) { !active.exists }, "the resumed coordinator stopped\n\(Self.logs(deployment))")
        kill(standby.process.processIdentifier, SIGCONT)
        #expect(activeText().contains("it recorded its takeover"), "\(activeText())")
        #expect(!activeText().contains("is back: resuming"), "\(activeText())")
        #expect(await eventually(30) { standbyText().contains("is back: resuming") }, "\(standbyText())")

        let requests = try (1...20).map {
            StartRequest(
                workflowType: "bench-sequential", workflowId: "fenced-\($0)", input: try Payload(encoding: 3, field: "input"))
        }
        try await deployment.client.start(requests)
        try deployment.startWorker(concurrency: 8)
        for request in requests {
            #expect(try await deployment.client.waitForResult(workflowId: request.workflowId, timeout: 60).status == .completed)
        }
        Self.expectEachStepRanOnce(deployment)
        #expect(standby.exists, "the standby goes on\n\(standbyText())")
        try await offPool { standby.terminate() }
    }

    /// A coordinator with the replicated history (lease heartbeats every second), paused until a
    /// standby with a file of its own took over: the deployment, the paused coordinator, the
    /// standby, its file, its log then, and the seconds from the pause to its takeover.
    static func replicatedAndTakenOver() async throws -> (Deployment, KeelProcess, KeelProcess, String, String, Double) {
        let deployment = try Deployment()
        deployment.extraEnvironment["KEEL_LEASE_HEARTBEAT"] = "1"
        deployment.extraEnvironment["KEEL_REPLICATION"] = "stream"
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        let active = try #require(deployment.coordinator)
        let standbyPath = deployment.directory.appendingPathComponent("standby.sqlite").path
        let (standby, standbyText, tookOver) = try await pauseUntilAStandbyTookOver(active, deployment, ["--db", standbyPath])
        return (deployment, active, standby, standbyPath, standbyText, tookOver)
    }

    /// Whether the namespace's lease queue is gone: its holder's connection was closed (the
    /// broker drops the connection of a paused process after two missed heartbeats).
    static func leaseIsFree(_ deployment: Deployment) -> Bool {
        guard let connection = try? AMQPConnection(url: deployment.url) else { return false }
        defer { connection.close() }
        do {
            _ = try connection.inspect(queue: deployment.topology.coordinatorLeaseQueue)
            return false
        } catch {
            // RESOURCE_LOCKED while another connection holds it.
            return "\(error)".contains("NOT_FOUND")
        }
    }

    /// Publishes 20 starts while `active` is paused (they reach both coordinators: the paused
    /// one's consumers are still registered, and it finds its share waiting when it resumes),
    /// resumes it, starts a worker and waits until every run completed and `active` stopped.
    /// Returns the starts and the resumed coordinator's log.
    static func startRunsAndResume(_ active: KeelProcess, _ deployment: Deployment) async throws -> ([StartRequest], String) {
        let requests = try (1...20).map {
            StartRequest(
                workflowType: "bench-sequential", workflowId: "fenced-\($0)", input: try Payload(encoding: 3, field: "input"))
        }
        try await deployment.client.start(requests)
        try await Task.sleep(for: .milliseconds(500))
        kill(active.process.processIdentifier, SIGCONT)
        try deployment.startWorker(concurrency: 8)
        for request in requests {
            do {
                #expect(
                    try await deployment.client.waitForResult(workflowId: request.workflowId, timeout: 60).status == .completed)
            } catch {
                Issue.record("\(request.workflowId): \(error)\n\(Self.logs(deployment))")
                throw error
            }
        }
        #expect(await eventually(30) { !active.exists }, "the resumed coordinator stopped\n\(Self.logs(deployment))")
        let log = (try? String(contentsOf: deployment.directory.appendingPathComponent("coordinator.log"), encoding: .utf8)) ?? ""
        return (requests, log)
    }

    /// The last lines of the coordinators' and the worker's logs: what a failed wait needs to be
    /// read (a CI run once found no coordinator answering for 60 s, with nothing else to go on).
    static func logs(_ deployment: Deployment) -> String {
        ["coordinator.log", "standby.log", "worker-0.log"].map { name in
            let text = (try? String(contentsOf: deployment.directory.appendingPathComponent(name), encoding: .utf8)) ?? ""
            return "--- \(name), last lines:\n" + text.split(separator: "\n").suffix(25).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Each of the 20 runs' 3 steps ran once: nothing the fenced coordinator held ran twice.
    static func expectEachStepRanOnce(_ deployment: Deployment) {
        let executions = deployment.executions.filter { $0.workflowId.hasPrefix("fenced-") }
        #expect(executions.count == 60, "\(executions.count) executions")
        #expect(Set(executions.map { "\($0.runId)/\($0.activityId)" }).count == 60)
    }

    /// Starts a standby (`arguments` added), pauses `active` with `kill -STOP` once the standby
    /// waits, and returns once the standby runs: the standby, its log then, and the seconds from
    /// the pause to its takeover.
    static func pauseUntilAStandbyTookOver(
        _ active: KeelProcess, _ deployment: Deployment, _ arguments: [String] = []
    ) async throws -> (KeelProcess, String, Double) {
        let standbyLog = deployment.directory.appendingPathComponent("standby.log")
        let standby = try KeelProcess(
            ["coordinator", "--standby"] + arguments, environment: deployment.environment, log: standbyLog)
        func standbyText() -> String { (try? String(contentsOf: standbyLog, encoding: .utf8)) ?? "" }
        #expect(await eventually(20) { standbyText().contains("waiting to take over") }, "\(standbyText())")
        kill(active.process.processIdentifier, SIGSTOP)
        let pausedAt = Date()
        #expect(await eventually(30) { standbyText().contains("coordinator running") }, "\(standbyText())")
        return (standby, standbyText(), Date().timeIntervalSince(pausedAt))
    }
}
