import Foundation
import KeelAMQP
import KeelCore
import Logging

// The worker-reports queue: every batch of reports applied in one transaction, claims answered.
extension CoordinatorService {
    /// The most reports a batch may have to be applied on the results consumer's thread.
    static let batchAppliedOnTheConsumersThread = 16

    func serveResults(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        let limits = configuration.coordinator.limits
        let publishing = BoundedTasks(limit: 8)
        // Publishes whose confirms the publisher's thread settles; at most 8 unconfirmed, as
        // `publishing` bounds the rest, so that a broker that stops confirming stops this loop.
        var unconfirmed: [PublishConfirmation] = []
        func apply(_ batch: [AMQPConsumer.Delivery]) async throws {
            var reports: [Coordinator.WorkerReport] = []
            // Claims are answered once committed: their message and their place in `reports`.
            var claims: [(message: AMQPDelivery, index: Int)] = []
            var rejected: Set<UInt64> = []
            for delivery in batch {
                let message = delivery.message
                do {
                    try limits.checkEnvelope(message, bodyLimit: limits.reportBody, what: "report")
                    let decoded = try WorkerReport.decode(message)
                    for report in decoded { try limits.check(report) }
                    if case .claim = decoded.first { claims.append((message, reports.count)) }
                    reports += decoded
                } catch {
                    let refused = RefusedMessages(publisher: publisher, logger: logger)
                    if await refused.deadLetter(
                        delivery, from: publisher.topology.resultsQueue, reason: Failure(error).description, consumer: consumer)
                    {
                        rejected.insert(message.deliveryTag)
                    }
                }
            }
            // Committed: publish the next tasks and acknowledge; their confirms come while the
            // next batch is applied. The tasks go out while the commit is written when the
            // publisher can (not with a replicated history log, whose confirm comes first).
            let (outgoing, applied) = try await coordinator.commit(
                reports, redelivered: batch.contains { $0.message.redelivered }, sendingDuringCommit: true)
            try await replicated()
            // Written here, not in the task below: handing them to another thread cost every
            // step a wake-up. Even one step at a time, waiting here for the confirm of the next
            // task (and the outbox row's deletion) kept its result, often back already, waiting.
            let sending = await coordinator.send(outgoing)
            consumer.ack(batch, except: rejected)
            for claim in claims {
                // Lost with a broken connection, the worker asks again.
                await reply(to: claim.message, with: JobReply(ok: applied[claim.index]), from: coordinator, publisher)
            }
            if sending.settleInBackground() {
                guard let confirmation = sending.tasks else { return }
                unconfirmed.removeAll { $0.isSettled }
                unconfirmed.append(confirmation)
                if unconfirmed.count > 8 { try? await unconfirmed.removeFirst().wait() }
            } else {
                await publishing.add { _ = await sending.settle() }
            }
        }
        while let batch = await consumer.nextBatch() {
            // A small batch is applied on the consumer's thread (this loop's executor): one step
            // at a time, no other thread is woken. A large one goes to Swift's pool, so that the
            // consumer's thread reads the next batch meanwhile.
            if batch.count > Self.batchAppliedOnTheConsumersThread {
                try await withTaskExecutorPreference(globalConcurrentExecutor) { try await apply(batch) }
            } else {
                try await apply(batch)
            }
        }
        await publishing.finish()
    }
}
