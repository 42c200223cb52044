import Synchronization

/// The worker's concurrency limit: at most `count` activities run at once. A slot is taken
/// before a delivery is handled. A short activity (its result stands for its start) gives it back
/// as soon as its result is in line to be sent, not once it is confirmed, so that the next task
/// starts while RabbitMQ still persists the last result; a longer one once its result is
/// confirmed. Tasks are acknowledged when their start or result is confirmed (so a long activity
/// never holds a delivery into RabbitMQ's consumer_timeout), which frees the prefetch window; the
/// slots are what keep a worker from running more than `count` at once.
///
/// Deliveries take their turn in the order they arrive (``reserve()``, on the consumer's thread),
/// not in the order their tasks happen to run: with one delivery more than the slots, a task
/// started later could otherwise take the slot first.
final class ActivitySlots: Sendable {
    private struct State {
        var free: Int
        var waiting: [Turn] = []
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

    /// A place in line for a slot; ``slot()`` waits until it is this one's.
    final class Turn: Sendable {
        private let slots: ActivitySlots
        private let state = Mutex((granted: false, waiter: CheckedContinuation<Void, Never>?.none))

        fileprivate init(_ slots: ActivitySlots) { self.slots = slots }

        fileprivate func grant() {
            let waiter = state.withLock { state in
                state.granted = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }

        /// Waits for the slot and takes it.
        func slot() async -> Slot {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let granted = state.withLock { state in
                    if !state.granted { state.waiter = continuation }
                    return state.granted
                }
                if granted { continuation.resume() }
            }
            return Slot(slots)
        }
    }

    /// Takes a place in line, now, on the caller's thread: a free slot if there is one, else
    /// behind those already waiting.
    func reserve() -> Turn {
        let turn = Turn(self)
        let free = state.withLock { state -> Bool in
            if state.free > 0 {
                state.free -= 1
                return true
            }
            state.waiting.append(turn)
            return false
        }
        if free { turn.grant() }
        return turn
    }

    /// Gives a slot back (to the longest waiter, if any).
    private func giveBack() {
        let next = state.withLock { state -> Turn? in
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.grant()
    }
}
