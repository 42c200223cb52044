import Foundation
import KeelCore
import KeelRuntime
import Synchronization

/// A broker in memory: task queues that outlive any coordinator using them, as a real broker
/// outlives a crashed process. Tasks are delivered in publish order per queue.
public final class InMemoryBroker: TaskPublisher {
    private let queues = Mutex([String: [ActivityTask]]())
    private let published = Mutex(0)
    private let dead = Mutex([DeadLetterEntry]())
    private let cancelled = Mutex([ActivityCancel]())

    public init() {}

    public func publish(_ tasks: [ActivityTask]) async throws {
        queues.withLock { queues in
            for task in tasks { queues[task.taskQueue, default: []].append(task) }
        }
        published.withLock { $0 += tasks.count }
    }

    public func deadLetter(_ entries: [DeadLetterEntry]) async throws {
        dead.withLock { $0.append(contentsOf: entries) }
    }

    public func cancel(_ attempts: [ActivityCancel]) async throws {
        cancelled.withLock { $0.append(contentsOf: attempts) }
    }

    /// Cancellations sent to workers so far, oldest first.
    public var cancellations: [ActivityCancel] { cancelled.withLock { $0 } }

    /// Dead-letter entries published so far, oldest first.
    public var deadLetters: [DeadLetterEntry] { dead.withLock { $0 } }

    /// Takes the oldest task of `queue`, or of any queue.
    public func take(queue: String? = nil) -> ActivityTask? {
        queues.withLock { queues in
            let name = queue ?? queues.keys.sorted().first { !(queues[$0]?.isEmpty ?? true) }
            guard let name, var tasks = queues[name], !tasks.isEmpty else { return nil }
            let task = tasks.removeFirst()
            queues[name] = tasks
            return task
        }
    }

    /// Tasks waiting, per queue.
    public var depth: [String: Int] { queues.withLock { $0.mapValues(\.count) } }

    /// Tasks published so far, duplicates included.
    public var publishedCount: Int { published.withLock { $0 } }
}
