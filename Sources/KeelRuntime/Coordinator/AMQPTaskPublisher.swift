import Foundation
import KeelAMQP
import KeelCore

/// Publishes activity tasks to `keel.tasks`, routed by task queue, with confirms.
public struct AMQPTaskPublisher: TaskPublisher {
    let publisher: AMQPPublisher
    /// Told how many tasks of every batch go to each task queue (the queue monitor counts them).
    let onDispatch: @Sendable ([String: Int]) -> Void

    /// Awaited before anything is published (the replicated history log's confirmation).
    let beforePublishing: @Sendable () async throws -> Void
    /// Whether ``sendAtOnce(_:)`` may publish: not when `beforePublishing` has to be awaited (a
    /// replicated history log), nor with quorum queues (``CoordinatorService``).
    let sendsAtOnce: Bool

    public init(
        publisher: AMQPPublisher, onDispatch: @escaping @Sendable ([String: Int]) -> Void = { _ in },
        beforePublishing: @escaping @Sendable () async throws -> Void = {}, sendsAtOnce: Bool = false
    ) {
        self.publisher = publisher
        self.onDispatch = onDispatch
        self.beforePublishing = beforePublishing
        self.sendsAtOnce = sendsAtOnce
    }

    public func publish(_ tasks: [ActivityTask]) async throws {
        try await send(tasks).wait()
    }

    /// Written before it returns when the publisher's connection is free (no hand-over to its
    /// thread on the path of every step).
    public func send(_ tasks: [ActivityTask]) async throws -> PublishConfirmation {
        try await beforePublishing()
        return start(try tasks.map { try $0.message(topology: publisher.topology) }, of: tasks)
    }

    public func sendAtOnce(_ tasks: [ActivityTask]) -> PublishConfirmation? {
        guard sendsAtOnce, let messages = try? tasks.map({ try $0.message(topology: publisher.topology) }) else {
            return nil
        }
        return start(messages, of: tasks)
    }

    private func start(_ messages: [AMQPMessage], of tasks: [ActivityTask]) -> PublishConfirmation {
        let counts = tasks.reduce(into: [String: Int]()) { $0[$1.taskQueue, default: 0] += 1 }
        let confirmation = PublishConfirmation()
        publisher.publish(messages, taskQueues: Set(counts.keys)) { [onDispatch] error in
            if error == nil { onDispatch(counts) }
            confirmation.settle(error)
        }
        return confirmation
    }

    public func deadLetter(_ entries: [DeadLetterEntry]) async throws {
        try await beforePublishing()
        try await publisher.publish(try entries.map { try $0.message(topology: publisher.topology) })
    }

    public func cancel(_ attempts: [ActivityCancel]) async throws {
        try await beforePublishing()
        try await publisher.publish(try attempts.map { try $0.message(topology: publisher.topology) })
    }
}
