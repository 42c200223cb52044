import Synchronization

/// One task's `started` report, as its worker decides on it and waits for it. A worker may hold
/// the report back while a short activity runs (``WorkerService/Configuration/startReportDelay``):
/// it is then sent once, when the delay passes or the activity heartbeats, or never, when the
/// activity ends first and its result stands for its start. Once sent, the worker waits first
/// until it is written to the connection, later until RabbitMQ confirmed it (then the task is
/// acknowledged). Marked from the publishing thread.
final class StartedReport: Sendable {
    private enum Decision { case undecided, send, skip }

    private struct State {
        var decision = Decision.undecided
        var written = false
        /// nil while unconfirmed; `.some(nil)` once confirmed, `.some(error)` if it failed.
        var settled: (any Error)?? = nil
        var writtenWaiters: [CheckedContinuation<Bool, Never>] = []
        var settledWaiters: [CheckedContinuation<(any Error)?, Never>] = []
    }

    private let state = Mutex(State())

    /// What a caller that wants the report sent does now.
    enum Turn { case sendIt, sentAlready, skipped }

    /// Decides to send the report: `.sendIt` to the first caller, unless ``skip()`` came first.
    func decideToSend() -> Turn {
        state.withLock { state in
            switch state.decision {
            case .undecided:
                state.decision = .send
                return .sendIt
            case .send: return .sentAlready
            case .skip: return .skipped
            }
        }
    }

    /// At the activity's end: true when no report was sent and none will be (the result then
    /// stands for the start, and the task is acknowledged once the result is confirmed).
    func skip() -> Bool {
        state.withLock { state in
            if state.decision == .undecided { state.decision = .skip }
            return state.decision == .skip
        }
    }

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

    /// Whether the report was written (false: it could not be sent at all). Call only after the
    /// report was sent.
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

    /// Waits for the confirm: nil once RabbitMQ confirmed the report, else why it failed. Call
    /// only after the report was sent.
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
