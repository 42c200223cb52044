import Foundation
import KeelAMQP
import KeelCore
import Logging
import Synchronization

/// The deliveries a worker handles right now, each in a task of its own, and the attempts they
/// run, by attempt key, so that the coordinator's cancels (``ActivityCancel`` on `keel.control`)
/// reach them: the task is cancelled, an LLM call's transfer is aborted, and
/// `context.isCancelled` turns true for a heartbeating activity.
///
/// The activity runs in the delivery's own task. A child of a task group per delivery, which then
/// ran the activity in a further task (and its deadline in a third), cost every step three
/// hand-overs between threads; and a task group keeps its finished children until they are
/// awaited.
final class RunningAttempts: Sendable {
    private let state = Mutex((next: 0, handling: [Int: AttemptCancellation](), attempts: [String: AttemptCancellation]()))

    /// Runs `body` in a new task; `body` gets what cancels that task.
    func handle(_ body: @escaping @Sendable (AttemptCancellation) async -> Void) {
        let cancellation = AttemptCancellation()
        let id = state.withLock { state in
            state.next += 1
            state.handling[state.next] = cancellation
            return state.next
        }
        let task = Task {
            await body(cancellation)
            _ = state.withLock { $0.handling.removeValue(forKey: id) }
        }
        cancellation.attach { task.cancel() }
    }

    /// Runs `body`, attempt `attemptKey` in the current task (the one ``handle(_:)`` made, which
    /// `cancellation` cancels), while ``cancel(_:)`` can reach it.
    func run(
        _ attemptKey: String, _ cancellation: AttemptCancellation, _ body: () async -> ActivityResult.Outcome
    ) async -> ActivityResult.Outcome {
        state.withLock { $0.attempts[attemptKey] = cancellation }
        defer { _ = state.withLock { $0.attempts.removeValue(forKey: attemptKey) } }
        return await body()
    }

    /// Cancels the attempt if it runs here; says whether it did.
    func cancel(_ attemptKey: String) -> Bool {
        guard let cancellation = state.withLock({ $0.attempts[attemptKey] }) else { return false }
        cancellation.cancel()
        return true
    }

    /// Cancels every delivery's task whose attempt has not ended (a shutdown's grace is over).
    func cancelAll() {
        for cancellation in state.withLock({ Array($0.handling.values) }) { cancellation.cancel() }
    }

    /// Takes the coordinator's messages on `keel.control` from `consumer` (a queue of this
    /// worker's own) until it stops: cancels, and a starting coordinator's epoch, which goes to
    /// `epochs`.
    func serveControl(from consumer: AMQPConsumer, epochs: EpochWatermark, logger: Logger) async {
        while let batch = await consumer.nextBatch() {
            for delivery in batch {
                let body = delivery.message.body
                if delivery.message.type == WireType.coordinatorEpoch.rawValue {
                    if let notice = try? Wire.decode(CoordinatorEpochNotice.self, from: body, what: "coordinator epoch") {
                        epochs.heard(notice.coordinatorEpoch)
                    }
                } else if let cancel = try? Wire.decode(ActivityCancel.self, from: body, what: "cancel"),
                    self.cancel(cancel.attemptKey)
                {
                    logger.info("attempt \(cancel.attemptKey) cancelled by the coordinator: \(cancel.reason)")
                }
            }
            consumer.ackInOrder(batch)
        }
    }
}
