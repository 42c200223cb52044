import Synchronization

/// Cancels the task that handles an attempt: for the coordinator's cancels, the attempt's
/// start-to-close deadline and the end of a shutdown's grace period. The task is attached once
/// it exists (a cancel that comes before is kept for it); after ``end()`` nothing cancels it,
/// so that what the task does after the activity (reporting its result) runs on.
public final class AttemptCancellation: Sendable {
    private struct State {
        var cancelTask: (@Sendable () -> Void)?
        var requested = false
        var expired = false
        var ended = false
    }

    private let state = Mutex(State())

    public init() {}

    /// The task to cancel.
    public func attach(_ cancelTask: @escaping @Sendable () -> Void) {
        let cancelNow = state.withLock { state -> Bool in
            state.cancelTask = cancelTask
            return state.requested && !state.ended
        }
        if cancelNow { cancelTask() }
    }

    /// Cancels the task, unless the attempt ended.
    public func cancel() { cancel(expiring: false) }

    /// Cancels the task because the attempt's deadline passed, unless it ended.
    func expire() { cancel(expiring: true) }

    private func cancel(expiring: Bool) {
        let cancelTask = state.withLock { state -> (@Sendable () -> Void)? in
            guard !state.ended else { return nil }
            state.requested = true
            if expiring { state.expired = true }
            return state.cancelTask
        }
        cancelTask?()
    }

    /// Ends the attempt: nothing cancels the task any more. Returns whether its deadline passed.
    func end() -> Bool {
        state.withLock { state in
            state.ended = true
            return state.expired
        }
    }
}
