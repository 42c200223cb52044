import Synchronization

/// One task's `started` report on its way to the coordinator, as its worker waits for it: first
/// until it is written to the connection (then the activity may run), later until RabbitMQ
/// confirmed it (then the task is acknowledged). Marked from the publishing thread.
final class StartedReport: Sendable {
    private struct State {
        var written = false
        /// nil while unconfirmed; `.some(nil)` once confirmed, `.some(error)` if it failed.
        var settled: (any Error)?? = nil
        var writtenWaiters: [CheckedContinuation<Bool, Never>] = []
        var settledWaiters: [CheckedContinuation<(any Error)?, Never>] = []
    }

    private let state = Mutex(State())

    func wrote() {
        let waiters = state.withLock { state in
            state.written = true
            defer { state.writtenWaiters.removeAll() }
            return state.writtenWaiters
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    func settle(_ error: (any Error)?) {
        let (written, settled) = state.withLock { state in
            state.settled = .some(error)
            defer {
                state.writtenWaiters.removeAll()
                state.settledWaiters.removeAll()
            }
            return (state.writtenWaiters, state.settledWaiters)
        }
        // Settled without ever being written: it was never sent.
        for waiter in written { waiter.resume(returning: false) }
        for waiter in settled { waiter.resume(returning: error) }
    }

    /// Whether the report was written (false: it could not be sent at all).
    func written() async -> Bool {
        await withCheckedContinuation { continuation in
            let known: Bool? = state.withLock { state in
                if state.written { return true }
                if state.settled != nil { return false }
                state.writtenWaiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }

    /// Waits for the confirm: nil once RabbitMQ confirmed the report, else why it failed.
    func confirmed() async -> (any Error)? {
        await withCheckedContinuation { continuation in
            let known: (any Error)?? = state.withLock { state in
                if let settled = state.settled { return .some(settled) }
                state.settledWaiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }
}
