import Foundation
import Keel
import KeelHistory
import KeelTestKit
import Testing

@testable import KeelAMQP
@testable import KeelRuntime

/// Replies carry the epoch of the coordinator that answered, and whoever asked skips one from an
/// older epoch than it has seen (docs/operations.md, "Fencing").
@Suite("Reply epochs", .tags(.integration), .serialized, .timeLimit(.minutes(2)))
struct ReplyEpochTests {
    /// Two answers to one request, the first from a coordinator older than the epoch the asker
    /// saw: the asker returns the second.
    @Test func anAnswerFromAnOlderEpochIsSkipped() async throws {
        let test = try TestQueue("reply-epoch")
        defer { test.remove() }
        let (url, requests) = (test.url, test.name)

        let responder = Thread {
            guard let answering = try? AMQPConnection(url: url) else { return }
            defer { answering.close() }
            try? answering.consume(queue: requests, noAck: true)
            guard let request = try? answering.next(timeout: 10), let replyTo = request.replyTo else { return }
            for (epoch, ok) in [(Int64(7), true), (Int64(10), false)] {
                var reply = JobReply(ok: ok)
                reply.coordinatorEpoch = epoch
                try? answering.publish(
                    AMQPMessage(
                        exchange: "", routingKey: replyTo, body: try! Wire.encode(reply), type: "reply",
                        correlationId: request.correlationId, persistent: false))
            }
        }
        responder.start()

        let asking = try AMQPConnection(url: url)
        defer { asking.close() }
        try asking.consume(queue: Topology.replyTo, noAck: true)
        let epochs = EpochWatermark()
        #expect(!epochs.isStale(10), "a task of epoch 10 was seen")
        let reply = try #require(
            try asking.ask(AMQPMessage(exchange: "", routingKey: requests, body: Data("{}".utf8)), timeout: 10, epochs: epochs))
        #expect(reply.coordinatorEpoch == 10)
        #expect(reply.ok == false, "the answer of epoch 7 was taken")
    }

    /// A running coordinator's answers carry the epoch it took of its history file.
    @Test func aCoordinatorsRepliesCarryItsEpoch() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try await deployment.client.start(
            StartRequest(workflowType: "bench-sequential", workflowId: "reply-epoch", input: Payload(encoding: 1, field: "input"))
        )

        let connection = try AMQPConnection(url: deployment.url)
        defer { connection.close() }
        try connection.consume(queue: Topology.replyTo, noAck: true)
        let route = deployment.topology.jobRoute(workflowId: "reply-epoch")
        let describe = try AMQPMessage.wire(
            .describe, WorkflowJob(workflowId: "reply-epoch"), exchange: route.exchange, routingKey: route.routingKey)
        // Behind the start in the jobs queue: the run is open (no worker serves its step).
        let reply = try #require(try connection.ask(describe, timeout: 10, epochs: EpochWatermark()))
        #expect(reply.ok, "\(String(describing: reply.error))")
        #expect(reply.run?.status == .running)
        let epoch = try #require(try deployment.store().currentEpoch()?.epoch)
        #expect(reply.coordinatorEpoch == epoch)
    }
}
