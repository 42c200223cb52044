import Foundation
import Keel
import KeelTestKit
import Testing

/// `KEEL_QUEUE_TYPE=quorum`: a namespace whose durable queues are quorum queues (replicated over
/// a RabbitMQ cluster's nodes) runs as on classic ones; a process of another type is refused
/// with the reason.
@Suite("Quorum queues", .tags(.integration), .timeLimit(.minutes(3)))
struct QuorumQueueTests {
    @Test func aNamespaceOnQuorumQueuesRunsAndAMismatchIsNamed() async throws {
        let deployment = try Deployment(queueType: .quorum)
        try deployment.startCoordinator()
        try deployment.startWorker()
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-sequential", workflowId: "on-quorum", input: try Payload(encoding: 4, field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "on-quorum", timeout: 60)
        #expect(run.status == .completed)
        #expect(run.result?.json == "6")

        // The queues really are quorum queues: declaring one as classic is refused by the broker.
        let url = deployment.url
        let jobs = deployment.topology.jobsQueue
        let dlx = deployment.topology.deadLetterExchange
        let refusal: String = try await offPool {
            let connection = try AMQPConnection(url: url)
            defer { connection.close() }
            do {
                try connection.declareQueue(jobs, deadLetterExchange: dlx)
                return "declared"
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal.contains("x-queue-type"), "\(refusal)")
        #expect(refusal.contains("needs the same KEEL_QUEUE_TYPE"), "\(refusal)")

        let bad = try await deployment.keel(["coordinator", "--queue-type", "sometimes"])
        #expect(bad.output.contains("--queue-type must be classic or quorum, not 'sometimes'"), "\(bad.output)")
    }
}
