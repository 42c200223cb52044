import Foundation
import Keel
import KeelTestKit
import Testing

/// A 3-node RabbitMQ cluster on this machine (`scripts/rabbitmq cluster`) with quorum queues:
/// `kill -9` of one node mid-run loses no task, and no step whose completion was recorded runs
/// again.
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

    @Test func quorumQueuesKeepEveryTaskThroughTheLossOfANode() async throws {
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

        // Every process connects to the first node; the third is the one lost. The queues are
        // declared from the third, so their leaders are there (RabbitMQ places a quorum queue's
        // leader on the declaring node): losing it moves them to a surviving node. (Classic
        // queues would be gone with it.)
        let deployment = try Deployment(url: try AMQPURL("amqp://guest:guest@localhost:\(first)"), queueType: .quorum)
        defer { deployment.stopAll() }
        let third = try AMQPConnection(url: try AMQPURL("amqp://guest:guest@localhost:\(first + 2)"))
        try deployment.topology.declare(on: third)
        third.close()
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        try deployment.startWorker(concurrency: 8)
        try deployment.startWorker(concurrency: 8)
        let requests = try (1...120).map {
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
        let killedAt = Date()

        let store = try deployment.store()
        for request in requests {
            let run = try await deployment.client.waitForResult(workflowId: request.workflowId, timeout: 120)
            #expect(run.status == .completed, "\(request.workflowId): \(run.failure?.description ?? "")")
        }
        // No step ran again after its completion was recorded.
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
        #expect(Set(executions.map { "\($0.runId)/\($0.activityId)" }).count == 360, "every step ran")
        print(
            "cluster: 120 runs of 3 steps completed, \(executions.count) executions, the last run \(String(format: "%.1f", Date().timeIntervalSince(killedAt))) s after the node was killed"
        )
    }
}
