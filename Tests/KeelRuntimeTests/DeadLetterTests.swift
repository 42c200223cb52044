import Foundation
import Keel
import KeelTestKit
import Synchronization
import Testing

/// An activity that fails (non-retryably) while the switch is off.
struct Flaky: Activity {
    static let name = "flaky"
    final class Switch: Sendable {
        let fixed = Mutex(false)
        let executions = Mutex(0)
    }
    let state: Switch
    func run(context: ActivityContext, input: String) async throws -> String {
        state.executions.withLock { $0 += 1 }
        guard state.fixed.withLock({ $0 }) else {
            throw ApplicationError(message: "upstream rejects \(input)", type: "NotYet", isNonRetryable: true)
        }
        return input.uppercased()
    }
}

/// Exhausted activities and bad messages in the dead-letter queue, and what `keel dlq` does
/// with them, through real processes and a real broker.
@Suite("Dead-letter queue", .tags(.integration), .timeLimit(.minutes(3)))
struct DeadLetterTests {
    @Test func exhaustedActivitiesAndBadMessagesAreListedWithContextThenDrained() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        // Each attempt sleeps past its start-to-close timeout: two attempts, then the workflow fails.
        let slow = JSONValue.object([
            "activityType": .string("sleep"), "input": .object(["step": .integer(1), "milliseconds": .integer(5000)]),
            "startToCloseSeconds": .number(0.5), "maximumAttempts": .integer(2)
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "too-slow", input: Payload(encoding: slow, field: "input")))
        let failed = try await deployment.client.waitForResult(workflowId: "too-slow", timeout: 30)
        #expect(failed.status == .failed)

        // A job nobody can read.
        let connection = try AMQPConnection(url: deployment.url)
        try connection.publish(
            AMQPMessage(
                exchange: deployment.topology.jobsExchange, routingKey: Topology.jobsRoutingKey, body: Data("{not json".utf8),
                type: "start", messageId: "garbled-1"))
        connection.close()

        var items: [DeadLetterItem] = []
        #expect(
            try await eventually(10) {
                items = try DeadLetterQueue(url: deployment.url, topology: deployment.topology).list()
                return items.count == 2
            })
        let listed = try await deployment.keel(["dlq", "list", "--json"])
        #expect(listed.status == 0, "\(listed.output)")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let fromCLI = try decoder.decode([DeadLetterItem].self, from: Data(listed.output.utf8))
        #expect(fromCLI.map(\.id) == items.map(\.id), "list leaves the queue as it was")

        let activity = try #require(items.first { $0.kind == .activity }?.entry)
        #expect(activity.workflowId == "too-slow")
        #expect(activity.runId == failed.runId)
        #expect(activity.activityType == "sleep")
        #expect(activity.taskQueue == "default")
        #expect(activity.parked == false)
        #expect(activity.input.json.contains("\"milliseconds\":5000"))
        #expect(activity.attempts.map(\.attempt) == [1, 2])
        #expect(activity.attempts.allSatisfy { $0.failure.type == "Timeout" && $0.worker != nil && $0.startedAt != nil })
        #expect(activity.failure.retryState == .maximumAttemptsReached)

        let message = try #require(items.first { $0.kind == .message })
        #expect(message.id == "garbled-1")
        #expect(message.origin == deployment.topology.jobsQueue)
        #expect(message.reason.contains("not valid"))
        #expect(message.bodyText == "{not json")

        // Not parked: its workflow already has the failure, so a redrive is refused and the entry stays.
        let refused = try await deployment.keel(["dlq", "redrive", activity.id])
        #expect(refused.status == 1)
        #expect(refused.output.contains("not parked"))

        let file = deployment.directory.appendingPathComponent("dead.jsonl")
        let drained = try await deployment.keel(["dlq", "drain", "--out", file.path])
        #expect(drained.status == 0, "\(drained.output)")
        #expect(drained.output.contains("drained 2 item(s)"))
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let fromFile = try lines.map { try decoder.decode(DeadLetterItem.self, from: Data($0.utf8)) }
        #expect(Set(fromFile.map(\.id)) == Set(items.map(\.id)))
        #expect(try DeadLetterQueue(url: deployment.url, topology: deployment.topology).list().isEmpty)
        deployment.stopAll()
    }

    @Test func aParkedActivityWaitsForARedriveOrADiscard() async throws {
        let deployment = try Deployment()
        deployment.taskQueues.insert("flaky")
        try deployment.startCoordinator()
        let flaky = Flaky.Switch()
        var activities = ActivityRegistry()
        activities.register(Flaky(state: flaky))
        var configuration = WorkerService.Configuration(
            url: deployment.url, taskQueue: "flaky", concurrency: 2, identity: "test-worker")
        configuration.topology = deployment.topology
        configuration.executionLog = nil
        let worker = WorkerService(configuration: configuration, activities: activities)
        let serving = Task { try await worker.run() }
        defer { worker.stop() }
        let queue = DeadLetterQueue(url: deployment.url, topology: deployment.topology)

        func start(_ id: String) async throws {
            let input = JSONValue.object([
                "activityType": .string("flaky"), "taskQueue": .string("flaky"), "input": .string(id), "park": .bool(true)
            ])
            _ = try await deployment.client.startAndConfirm(
                StartRequest(
                    workflowType: "call-activity", workflowId: id, input: try Payload(encoding: input, field: "input")))
        }
        try await start("parked-1")
        try await start("parked-2")
        var items: [DeadLetterItem] = []
        #expect(
            try await eventually(60) {
                items = try queue.list()
                return items.count == 2
            })
        #expect(items.allSatisfy { $0.entry?.parked == true && $0.entry?.failure.type == "NotYet" })
        #expect(flaky.executions.withLock { $0 } == 2, "non-retryable: one attempt each")
        // Parked, not failed: the workflows wait.
        for id in ["parked-1", "parked-2"] {
            let run = try await deployment.client.describe(workflowId: id)
            #expect(run.status == .running)
            #expect(try deployment.store().events(runId: run.runId).contains { $0.kind == .activityParked })
        }

        flaky.fixed.withLock { $0 = true }
        let first = try #require(items.first { $0.entry?.workflowId == "parked-1" })
        let redriven = try await deployment.keel(["dlq", "redrive", first.id])
        #expect(redriven.status == 0, "\(redriven.output)")
        let done = try await deployment.client.waitForResult(workflowId: "parked-1", timeout: 30)
        #expect(done.status == .completed)
        #expect(done.result?.json == "\"PARKED-1\"")
        #expect(try deployment.store().events(runId: done.runId).contains { $0.kind == .activityRedriven })

        let second = try #require(items.first { $0.entry?.workflowId == "parked-2" })
        let discarded = try await deployment.keel(["dlq", "discard", second.id])
        #expect(discarded.status == 0, "\(discarded.output)")
        let gaveUp = try await deployment.client.waitForResult(workflowId: "parked-2", timeout: 30)
        #expect(gaveUp.status == .failed)
        #expect(gaveUp.failure?.message.contains("upstream rejects parked-2") == true)
        #expect(flaky.executions.withLock { $0 } == 3, "the redrive ran one attempt, the discard none")
        #expect(try queue.list().isEmpty)

        // Gone from the queue: a second redrive names nothing.
        let again = try await deployment.keel(["dlq", "redrive", first.id])
        #expect(again.status == 1)
        #expect(again.output.contains("no such entry"))
        worker.stop()
        try await serving.value
        deployment.stopAll()
    }
}
