import Foundation
import KeelAMQP
import KeelCore
import Logging

// What one unit of work changes, and what its commit sends.
extension Coordinator {
    /// One transaction's worth of changes.
    struct Work {
        var now: Date
        var batch = StoreBatch()
        var touched: [String: LiveRun] = [:]
        var closed: [RunRecord] = []
        /// Attempts that workers must stop, sent after the commit.
        var cancels: [ActivityCancel] = []
        /// The reports applied include one RabbitMQ delivered again: a coordinator that stopped
        /// before committing them may have published the attempts they lead to, so those
        /// attempts are claimed before they run (``ActivityRecord/claimFirst``).
        var fromRedelivered = false
        /// The tasks may be written to the broker while the commit is written, instead of after
        /// it (``Coordinator/commit(_:)``); cleared when that would not be safe.
        var sendsDuringCommit = false
    }

    /// What a committed unit of work sends: its tasks and dead-letter entries, already in their
    /// outboxes. ``publish(_:)`` sends them; until then ``flushOutbox()`` leaves them alone.
    public struct Outgoing: Sendable {
        var tasks: [ActivityTask] = []
        var deadLetters: [DeadLetterEntry] = []
        /// Not in an outbox: a cancel that is lost is sent again in answer to the attempt's heartbeat.
        var cancels: [ActivityCancel] = []
        /// The tasks' confirmation, when they were written during the commit.
        var sent: PublishConfirmation?
        var keys: [String] { tasks.map(\.attemptKey) + deadLetters.map(\.id) }
    }

    /// Publishes settled, for the actor to take in.
    struct SettledPublishes: Sendable {
        /// The outbox rows of confirmed messages, to delete.
        var confirmed = StoreBatch()
        /// Publishes that failed: their rows stay, for ``flushOutbox()``.
        var failed: [(Outgoing, any Error)] = []
    }
}
