import Foundation
import KeelAMQP
import KeelCore
import Logging
import Synchronization

/// The attempts a worker runs right now, by attempt key, so that the coordinator's cancels
/// (``ActivityCancel`` on `keel.control`) reach them: the attempt's task is cancelled, an LLM
/// call's transfer is aborted, and `context.isCancelled` turns true for a heartbeating activity.
final class RunningAttempts: Sendable {
    private let running = Mutex<[String: Task<ActivityResult.Outcome, Never>]>([:])

    /// Runs `body` as the attempt's task until it ends, cancelled by ``cancel(_:)`` or when the
    /// caller's task is.
    func run(
        _ attemptKey: String, _ body: @escaping @Sendable () async -> ActivityResult.Outcome
    ) async -> ActivityResult.Outcome {
        let execution = Task { await body() }
        running.withLock { $0[attemptKey] = execution }
        defer { _ = running.withLock { $0.removeValue(forKey: attemptKey) } }
        return await withTaskCancellationHandler {
            await execution.value
        } onCancel: {
            execution.cancel()
        }
    }

    /// Cancels the attempt if it runs here; says whether it did.
    func cancel(_ attemptKey: String) -> Bool {
        guard let execution = running.withLock({ $0[attemptKey] }) else { return false }
        execution.cancel()
        return true
    }

    /// Takes the coordinator's cancels from `consumer` (a queue of this worker's own on
    /// `keel.control`) until it stops.
    func serveCancels(from consumer: AMQPConsumer, logger: Logger) async {
        while let batch = await consumer.nextBatch() {
            for delivery in batch {
                if let cancel = try? Wire.decode(ActivityCancel.self, from: delivery.message.body, what: "cancel"),
                    self.cancel(cancel.attemptKey)
                {
                    logger.info("attempt \(cancel.attemptKey) cancelled by the coordinator: \(cancel.reason)")
                }
            }
            consumer.ackInOrder(batch)
        }
    }
}
