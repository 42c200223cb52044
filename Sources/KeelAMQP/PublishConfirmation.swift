import Synchronization

/// A publish that was started: ``wait()`` returns once RabbitMQ confirmed all of its messages,
/// or throws why they could not be published.
public final class PublishConfirmation: Sendable {
    private let state = Mutex((outcome: Result<Void, any Error>?.none, waiters: [CheckedContinuation<Void, any Error>]()))

    public init() {}

    /// One settled already: confirmed (nil) or failed.
    public convenience init(settled error: (any Error)?) {
        self.init()
        settle(error)
    }

    /// Settles it (nil: confirmed) and resumes the waiters; later calls change nothing.
    public func settle(_ error: (any Error)?) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard state.outcome == nil else { return [] }
            state.outcome = error.map { .failure($0) } ?? .success(())
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters {
            if let error { waiter.resume(throwing: error) } else { waiter.resume() }
        }
    }

    /// Returns once confirmed; throws if the messages could not be published.
    public func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state in
                if state.outcome == nil { state.waiters.append(continuation) }
                return state.outcome
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }
}
