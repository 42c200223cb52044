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
@Suite("Reports and claims in the order they were sent", .tags(.integration), .timeLimit(.minutes(2)))
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
}
