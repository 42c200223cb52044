import Foundation
import Keel
import KeelTestKit
import Testing

/// Limits the broker imposes: `consumer_timeout` and resource alarms. This suite's broker
/// (on a free port) has the consumer timeout lowered to 2 s.
@Suite("Broker limits", .serialized, .tags(.integration), .timeLimit(.minutes(3)))
struct BrokerLimitTests {
    static let port = freeBrokerPort()
    static let timeoutMilliseconds = 2000

    /// RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged longer than
    /// `consumer_timeout` (30 min by default) and redelivers it. A 45-minute GPU job must survive
    /// that: workers acknowledge a task once its start is reported, and liveness is the
    /// coordinator's heartbeat timeout.
    @Test func anActivityLongerThanTheConsumerTimeoutRunsOnceAndCompletes() async throws {
        try await startLocalBroker(port: Self.port, environment: "KEEL_RABBITMQ_CONSUMER_TIMEOUT_MS=\(Self.timeoutMilliseconds)")
        defer { try? localBroker("remove", port: Self.port) }
        let url = try AMQPURL("amqp://guest:guest@localhost:\(Self.port)")

        // The broker does enforce it: a consumer that sits on a delivery loses its channel.
        let holder = try AMQPConnection(url: url)
        defer { holder.close() }
        try holder.declareQueue("consumer-timeout-probe", deadLetterExchange: nil)
        try holder.purge(queue: "consumer-timeout-probe")
        try holder.publish(AMQPMessage(exchange: "", routingKey: "consumer-timeout-probe", body: Data("x".utf8)))
        try holder.qos(prefetch: 1)
        try holder.consume(queue: "consumer-timeout-probe")
        var held: AMQPDelivery?
        var closedAfter: Double?
        let begin = Date()
        while Date().timeIntervalSince(begin) < 20 {
            do {
                if let delivery = try holder.next(timeout: 0.2) { held = delivery }
            } catch {
                closedAfter = Date().timeIntervalSince(begin)
                break
            }
        }
        #expect(held != nil)
        let closed = try #require(closedAfter, "the broker never closed the channel of a consumer holding a delivery")
        #expect(closed >= Double(Self.timeoutMilliseconds) / 1000)

        // A Keel activity running four times as long: one execution, completed.
        let deployment = try Deployment(url: url)
        defer { deployment.stopAll() }
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 1)
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: "long-gpu-job",
                input: Payload(encoding: StepsInput(steps: 1, milliseconds: 4 * Self.timeoutMilliseconds), field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "long-gpu-job", timeout: 60)
        #expect(run.status == .completed, "\(run.failure?.description ?? "")")
        #expect(deployment.executions.map(\.attempt) == [1], "no redelivery, no second execution")
        let events = try deployment.store().events(runId: run.runId)
        #expect(events.filter { $0.kind == .activityStarted }.count == 1)
    }

    /// Tasks queued behind long activities are not held by their worker: a worker whose every
    /// slot runs an activity past its start report takes no tasks and gives back those it holds,
    /// unrun and at no cost to their attempt. Held, each would sit past the consumer timeout,
    /// and the broker would close the channel and deliver it again, failing its attempt.
    @Test func tasksQueuedBehindLongActivitiesAreNotHeldIntoTheConsumerTimeout() async throws {
        try await startLocalBroker(port: Self.port, environment: "KEEL_RABBITMQ_CONSUMER_TIMEOUT_MS=\(Self.timeoutMilliseconds)")
        defer { try? localBroker("remove", port: Self.port) }
        let deployment = try Deployment(url: try AMQPURL("amqp://guest:guest@localhost:\(Self.port)"))
        defer { deployment.stopAll() }
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 1)
        let ids = (1...3).map { "queued-\($0)" }
        try await deployment.startSteps(ids, StepsInput(steps: 1, milliseconds: 3 * Self.timeoutMilliseconds / 2))
        for id in ids {
            let run = try await deployment.client.waitForResult(workflowId: id, timeout: 60)
            #expect(run.status == .completed, "\(id): \(run.failure?.description ?? "")")
            let events = try deployment.store().events(runId: run.runId)
            #expect(!events.contains { $0.kind == .activityFailed }, "\(id): \(events.map(\.kind))")
        }
        #expect(deployment.executions.map(\.attempt) == [1, 1, 1], "each ran once, on its first attempt")
        let log = try String(contentsOf: deployment.directory.appendingPathComponent("worker-0.log"), encoding: .utf8)
        #expect(!log.contains("PRECONDITION_FAILED"), "the broker never closed the worker's channel")
        #expect(log.contains("handed back unrun"))
    }

    /// A broker in a memory alarm blocks publishers. Keel says so in its log and waits; once the
    /// alarm clears, the publish completes.
    @Test func aBlockedBrokerIsReportedAndPublishingResumesWhenItUnblocks() async throws {
        try await startLocalBroker(port: Self.port, environment: "KEEL_RABBITMQ_CONSUMER_TIMEOUT_MS=\(Self.timeoutMilliseconds)")
        defer { try? localBroker("remove", port: Self.port) }
        let deployment = try Deployment(url: try AMQPURL("amqp://guest:guest@localhost:\(Self.port)"))
        defer { deployment.stopAll() }
        #expect(Self.watermark("0") == 0, "memory alarm raised")
        defer { _ = Self.watermark("0.4") }
        let log = deployment.directory.appendingPathComponent("start.log")
        let start = try KeelProcess(
            ["start", "bench-sequential", "--id", "while-blocked", "--input", "1"], environment: deployment.environment, log: log)
        #expect(await eventually(20) { ((try? String(contentsOf: log, encoding: .utf8)) ?? "").contains("blocks publishing") })
        #expect(start.process.isRunning, "waits instead of failing")
        #expect(Self.watermark("0.4") == 0, "memory alarm cleared")
        #expect(await eventually(20) { !start.process.isRunning })
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(start.process.terminationStatus == 0, "\(output)")
        #expect(output.contains("unblocked publishing"))
        #expect(output.contains("start of bench-sequential while-blocked published"))
        let connection = try AMQPConnection(url: deployment.url)
        defer { connection.close() }
        #expect(try connection.messageCount(queue: deployment.topology.jobsQueue) == 1, "the job arrived")
    }

    /// Sets the broker's memory high watermark (a fraction of RAM; 0 raises the alarm at once).
    static func watermark(_ fraction: String) -> Int32 {
        system("rabbitmqctl -n keel\(port)@localhost set_vm_memory_high_watermark \(fraction) >/dev/null 2>&1")
    }
}
