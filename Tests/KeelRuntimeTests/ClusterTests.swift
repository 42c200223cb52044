import Foundation
import Keel
import KeelTestKit
import Testing

/// A 3-node RabbitMQ cluster on this machine (`scripts/rabbitmq cluster`) with quorum queues and
/// the replicated history: `kill -9` of one node mid-run loses no task, a standby takes over from
/// the log when the active coordinator's machine is lost too, and no step whose completion was
/// recorded runs again.
@Suite("A 3-node RabbitMQ cluster", .serialized, .tags(.integration), .timeLimit(.minutes(6)))
struct ClusterTests {
    static let script = ForeignClientTests.root.appendingPathComponent("scripts/rabbitmq").path

    /// The first of three consecutive free ports whose distribution ports (+20000) are free too.
    static func freeClusterPort() -> Int {
        for _ in 0..<500 {
            let first = Int.random(in: 30_000..<39_000)
            if (first..<first + 3).allSatisfy({ portIsFree($0) && portIsFree($0 + 20_000) }) { return first }
        }
        return 5701
    }

    /// The machine loss of issue 17: with quorum queues and the replicated history, one broker
    /// node is killed mid-run, then the active coordinator, whose history file is deleted. A
    /// standby with a file of its own, fed by the history stream, takes over; every run completes
    /// and no step whose completion was recorded runs again.
    @Test func aStandbyFedByTheLogTakesOverWhenTheActiveMachineAndABrokerNodeAreLost() async throws {
        let first = Self.freeClusterPort()
        let started = try await offPool {
            system("KEEL_CLUSTER_PORT=\(first) bash '\(Self.script)' cluster start </dev/null >/dev/null 2>&1")
        }
        defer {
            _ = system("KEEL_CLUSTER_PORT=\(first) bash '\(Self.script)' cluster stop </dev/null >/dev/null 2>&1")
            for port in first..<first + 3 {
                try? FileManager.default.removeItem(at: ForeignClientTests.root.appendingPathComponent(".keel/rabbitmq/\(port)"))
            }
        }
        try #require(started == 0, "scripts/rabbitmq cluster start")

        // Every process connects to the first node; the third is the one lost. The queues and
        // the history stream are declared from the third, so their leaders are there (RabbitMQ
        // places a quorum queue's or a stream's leader on the declaring node): losing it moves
        // them to a surviving node. (Classic queues would be gone with it.)
        let deployment = try Deployment(url: try AMQPURL("amqp://guest:guest@localhost:\(first)"), queueType: .quorum)
        defer { deployment.stopAll() }
        deployment.extraEnvironment["KEEL_REPLICATION"] = "stream"
        let third = try AMQPConnection(url: try AMQPURL("amqp://guest:guest@localhost:\(first + 2)"))
        try deployment.topology.declare(on: third)
        try third.declareQueue(deployment.topology.historyStream, deadLetterExchange: nil, queueType: "stream")
        third.close()
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        let standbyPath = deployment.directory.appendingPathComponent("standby.sqlite").path
        let standbyLog = deployment.directory.appendingPathComponent("standby.log")
        let standby = try KeelProcess(
            ["coordinator", "--standby", "--db", standbyPath], environment: deployment.environment, log: standbyLog)
        defer { standby.terminate() }
        func standbyText() -> String { (try? String(contentsOf: standbyLog, encoding: .utf8)) ?? "" }
        #expect(await eventually(30) { standbyText().contains("waiting to take over") }, "\(standbyText())")
        try deployment.startWorker(concurrency: 8)
        try deployment.startWorker(concurrency: 8)
        let requests = try (1...300).map {
            StartRequest(
                workflowType: "bench-steps", workflowId: "cluster-\($0)",
                input: try Payload(encoding: StepsInput(steps: 3, milliseconds: 200), field: "input"))
        }
        try await deployment.client.start(requests)
        #expect(await eventually(60) { deployment.executions.count >= 60 }, "the run is under way")
        let lost = try await offPool {
            system("KEEL_AMQP_PORT=\(first + 2) bash '\(Self.script)' kill </dev/null >/dev/null 2>&1")
        }
        #expect(lost == 0, "node keel\(first + 2) was killed")
        #expect(await eventually(60) { deployment.executions.count >= 300 }, "the run goes on without the node")

        // The active coordinator's machine is gone: the process and its history file.
        let active = try #require(deployment.coordinator)
        try await offPool { active.kill() }
        let killedAt = Date()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: deployment.databasePath + suffix) }
        #expect(await eventually(60) { standbyText().contains("coordinator running") }, "\(standbyText())")
        let tookOver = Date().timeIntervalSince(killedAt)
        #expect(standbyText().contains("caught up to transaction"), "\(standbyText())")
        // A slow takeover prints the standby's whole log, to say where the time went (one run
        // of many took 26.5 s, with no log kept).
        let slow = tookOver > 5
        for line in standbyText().split(separator: "\n")
        where slow || line.contains("taking over") || line.contains("caught up") {
            print("standby: \(line)")
        }

        let store = try SQLiteHistoryStore(path: standbyPath)
        for request in requests {
            let run = try await deployment.client.waitForResult(workflowId: request.workflowId, timeout: 120)
            #expect(run.status == .completed, "\(request.workflowId): \(run.failure?.description ?? "")")
        }
        // No step ran again after its completion was recorded (in the history the standby holds,
        // with the times the active one recorded).
        var completedAt: [String: Date] = [:]
        for request in requests {
            let run = try #require(try store.latestRun(workflowId: request.workflowId))
            for event in try store.events(runId: run.runId) where event.kind == .activityCompleted {
                completedAt["\(run.runId)/\(event.ref ?? -1)"] = event.time
            }
        }
        let executions = deployment.executions
        let after = executions.filter { execution in
            completedAt["\(execution.runId)/\(execution.activityId)"].map { execution.time > $0 } ?? false
        }
        #expect(after.isEmpty, "steps run again after their completion: \(after.prefix(5))")
        #expect(Set(executions.map { "\($0.runId)/\($0.activityId)" }).count == 900, "every step ran")
        print(
            "cluster: 300 runs of 3 steps completed, \(executions.count) executions; the standby took over \(String(format: "%.2f", tookOver)) s after the kill of the active coordinator (its file deleted), the last run \(String(format: "%.1f", Date().timeIntervalSince(killedAt))) s after it"
        )
    }
}
