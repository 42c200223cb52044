import Foundation
import KeelAMQP
import KeelTestKit
import Synchronization
import Testing

@testable import KeelRuntime

/// A claim goes out behind every report its worker sent before it, on the reports' channel: the
/// result of one copy of an attempt (standing for that copy's start, not yet confirmed) reaches
/// the coordinator's queue before the claim of another copy, or the coordinator would grant the
/// claim and both copies would run.
@Suite(
    "Reports and claims in the order they were sent, tasks acknowledged once confirmed", .tags(.integration),
    .timeLimit(.minutes(2)))
struct ReportSenderTests {
    @Test func aClaimIsQueuedBehindEveryReportSentBeforeIt() async throws {
        let url = try AMQPURL.fromEnvironment()
        let topology = Topology.forTest()
        defer { topology.remove(from: url) }
        let setup = try AMQPConnection(url: url)
        defer { setup.close() }
        try topology.declare(on: setup)
        let publisher = AMQPPublisher(url: url, topology: topology)
        let reports = ReportSender(publisher: publisher)
        // Eight tasks at once, like activities in eight slots: each sends a result without
        // waiting for its confirm, then claims; many publishes are in flight together.
        let steps = 100
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<8 {
                group.addTask {
                    for step in 0..<steps {
                        let runId = "run-\(lane)-\(step)"
                        reports.send(
                            .result(
                                ActivityResult(runId: runId, activityId: 1, attempt: 1, worker: "w", outcome: .completed(.null))),
                            workflowId: runId, settled: { _ in })
                        try await reports.claim(
                            ActivityClaim(runId: runId, activityId: 1, attempt: 1, worker: "w", claimId: runId),
                            workflowId: runId, replyTo: "answers", correlationId: runId)
                    }
                }
            }
            try await group.waitForAll()
        }
        await publisher.closeOffPool()

        // Read the coordinator's queue in order: each run's result comes before its claim.
        var seen = Set<String>()
        var claims = 0
        while let delivery = try await offPool({ try setup.get(queue: topology.resultsQueue) }) {
            for report in try WorkerReport.decode(delivery) {
                switch report {
                case .result(let result): seen.insert(result.runId)
                case .claim(let claim):
                    #expect(seen.contains(claim.runId), "the claim of \(claim.runId) came before its result")
                    #expect(delivery.replyTo == "answers" && delivery.correlationId == claim.runId)
                    claims += 1
                default: Issue.record("unexpected report \(report)")
                }
            }
        }
        #expect(seen.count == 8 * steps)
        #expect(claims == 8 * steps)
    }

    /// A report sent `acknowledging` a task's delivery acknowledges it once the report is
    /// confirmed, before its `settled` is called, together with the deliveries of the reports
    /// confirmed with it, whatever order they finish in: none comes back when the consumer goes.
    @Test func aConfirmedReportAcknowledgesItsTask() async throws {
        let tasks = try TestQueue("acknowledged-tasks")
        defer { tasks.remove() }
        let url = tasks.url
        let topology = Topology.forTest()
        defer { topology.remove(from: url) }
        try topology.declare(on: tasks.setup)
        try tasks.setup.enableConfirms()
        let count = 40
        for index in 0..<count {
            try tasks.setup.publish(AMQPMessage(exchange: "", routingKey: tasks.name, body: Data("\(index)".utf8)))
        }
        try tasks.setup.waitForConfirms()
        let consumer = AMQPConsumer(url: url, queue: tasks.name, prefetch: count, maxBatch: count) { _ in }
        consumer.start()
        var received: [AMQPConsumer.Delivery] = []
        while received.count < count, let batch = await consumer.nextBatch() { received += batch }
        let deliveries = received
        #expect(deliveries.count == count)

        let publisher = AMQPPublisher(url: url, topology: topology)
        let reports = ReportSender(publisher: publisher)
        let settled = SettledCount()
        // Finished out of the order they came: odd ones first, then the even ones backwards.
        let order = deliveries.indices.filter { $0 % 2 == 1 } + deliveries.indices.filter { $0 % 2 == 0 }.reversed()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in order {
                let delivery = deliveries[index]
                let runId = "run-\(index)"
                group.addTask {
                    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                        reports.send(
                            .result(
                                ActivityResult(runId: runId, activityId: 1, attempt: 1, worker: "w", outcome: .completed(.null))),
                            workflowId: runId, acknowledging: (consumer, delivery)
                        ) { error in
                            settled.count.withLock { $0 += 1 }
                            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(settled.count.withLock { $0 } == count)
        await publisher.closeOffPool()
        // Gone with its connection: a delivery left unacknowledged would be back in the queue.
        consumer.stop()
        await consumer.deliveriesEnded()
        try await Task.sleep(for: .milliseconds(300))
        #expect(try tasks.setup.messageCount(queue: tasks.name) == 0)
    }

    final class SettledCount: Sendable {
        let count = Mutex(0)
    }
}
