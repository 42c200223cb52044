import KeelAMQP
import KeelCore

/// Sends activity tasks to workers. Returns once the transport holds them durably
/// (publisher confirms); the coordinator clears its outbox only then.
public protocol TaskPublisher: Sendable {
    func publish(_ tasks: [ActivityTask]) async throws
    /// Starts publishing `tasks` and returns the wait for the transport to hold them durably:
    /// the caller goes on while the confirms come. (By default it publishes and waits.)
    func send(_ tasks: [ActivityTask]) async throws -> PublishConfirmation
    /// Starts publishing `tasks` from a caller that cannot wait (the coordinator, while its
    /// commit is written), or returns nil if this publisher cannot: it has to wait for
    /// something first, such as the replicated history log. (By default: nil.)
    func sendAtOnce(_ tasks: [ActivityTask]) -> PublishConfirmation?
    /// Sends entries to the dead-letter queue, durably; their outbox rows are cleared after.
    func deadLetter(_ entries: [DeadLetterEntry]) async throws
    /// Tells every worker to stop these attempts (best effort: a worker that misses it hears it
    /// again in answer to its next heartbeat).
    func cancel(_ attempts: [ActivityCancel]) async throws
}

extension TaskPublisher {
    public func sendAtOnce(_ tasks: [ActivityTask]) -> PublishConfirmation? { nil }

    public func send(_ tasks: [ActivityTask]) async throws -> PublishConfirmation {
        try await publish(tasks)
        return PublishConfirmation(settled: nil)
    }
}
