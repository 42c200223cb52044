import Synchronization

/// The worker's concurrency limit: at most `count` activities run at once. A slot is taken
/// before a delivery is handled. A short activity (its result stands for its start) gives it back
/// as soon as its result is in line to be sent, not once it is confirmed, so that the next task
/// starts while RabbitMQ still persists the last result; a longer one once its result is
/// confirmed. Tasks are acknowledged when their start or result is confirmed (so a long activity
/// never holds a delivery into RabbitMQ's consumer_timeout), which frees the prefetch window; the
/// slots are what keep a worker from running more than `count` at once.
final class ActivitySlots: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    /// A taken slot; ``release()`` gives it back, once however often it is called.
    final class Slot: Sendable {
        private let slots: ActivitySlots
        private let held = Atomic(true)

        fileprivate init(_ slots: ActivitySlots) { self.slots = slots }

        func release() {
            guard held.exchange(false, ordering: .acquiringAndReleasing) else { return }
            slots.giveBack()
        }
    }

    /// Waits for a free slot and takes it.
    func acquire() async -> Slot {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
        return Slot(self)
    }

    /// Gives a slot back (to the longest waiter, if any).
    private func giveBack() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
