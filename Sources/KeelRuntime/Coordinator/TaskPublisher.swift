import KeelCore

/// Sends activity tasks to workers. Returns once the transport holds them durably
/// (publisher confirms); the coordinator clears its outbox only then.
public protocol TaskPublisher: Sendable {
    func publish(_ tasks: [ActivityTask]) async throws
    /// Sends entries to the dead-letter queue, durably; their outbox rows are cleared after.
    func deadLetter(_ entries: [DeadLetterEntry]) async throws
    /// Tells every worker to stop these attempts (best effort: a worker that misses it hears it
    /// again in answer to its next heartbeat).
    func cancel(_ attempts: [ActivityCancel]) async throws
}
