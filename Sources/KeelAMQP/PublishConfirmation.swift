import Synchronization

/// A publish that was started: ``wait()`` returns once RabbitMQ confirmed all of its messages,
/// or throws why they could not be published; ``onSettle(_:)`` calls back instead.
public final class PublishConfirmation: Sendable {
    private struct State {
        var outcome: Result<Void, any Error>?
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var callbacks: [@Sendable ((any Error)?) -> Void] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// One settled already: confirmed (nil) or failed.
    public convenience init(settled error: (any Error)?) {
        self.init()
        settle(error)
    }

    /// Settles it (nil: confirmed), resumes the waiters and calls the callbacks on this thread;
    /// later calls change nothing.
    public func settle(_ error: (any Error)?) {
        let (waiters, callbacks) = state.withLock { state in
            guard state.outcome == nil else {
                return ([CheckedContinuation<Void, any Error>](), [@Sendable ((any Error)?) -> Void]())
            }
            state.outcome = error.map { .failure($0) } ?? .success(())
            defer { (state.waiters, state.callbacks) = ([], []) }
            return (state.waiters, state.callbacks)
        }
        for waiter in waiters {
            if let error { waiter.resume(throwing: error) } else { waiter.resume() }
        }
        for callback in callbacks { callback(error) }
    }

    /// Whether it is confirmed or failed already.
    public var isSettled: Bool { state.withLock { $0.outcome != nil } }

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

    /// Calls `body` with nil once confirmed, or with why the messages could not be published: on
    /// the thread that settles it (keep it short), or at once if it is settled already. No task
    /// waits, so no thread is woken for it.
    public func onSettle(_ body: @escaping @Sendable ((any Error)?) -> Void) {
        let outcome = state.withLock { state in
            if state.outcome == nil { state.callbacks.append(body) }
            return state.outcome
        }
        guard let outcome else { return }
        switch outcome {
        case .success: body(nil)
        case .failure(let error): body(error)
        }
    }
}
