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
///
/// A delivery waits for a slot only while one will come free without another acknowledgement:
/// once every slot holds an activity whose task is already acknowledged (``Slot/acknowledgedEarly()``),
/// nothing frees a slot but the end of one of those, maybe in hours, and RabbitMQ would close the
/// consumer's channel at its `consumer_timeout` over a delivery held that long. The waiting turns
/// are then handed back (``Turn/slot()`` returns nil: the worker gives the task back unrun), so
/// are turns reserved while it lasts, and `full(true)` tells the worker to stop taking tasks until
/// one of those slots is given back (`full(false)`).
final class ActivitySlots: Sendable {
    private struct State {
        var free: Int
        var waiting: [Turn] = []
        /// Slots held by activities whose tasks were acknowledged while they ran.
        var acknowledged = 0
    }
    private let count: Int
    private let state: Mutex<State>
    /// Called with true when every slot holds an acknowledged activity, with false when one of
    /// them gives its slot back; under the slots' lock, so calls come in the order of the
    /// changes (it must not call back into the slots).
    private let full: @Sendable (Bool) -> Void

    init(_ count: Int, full: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.count = count
        self.full = full
        state = Mutex(State(free: count))
    }

    /// A taken slot; ``release()`` gives it back, once however often it is called.
    final class Slot: Sendable {
        private let slots: ActivitySlots
        /// held → acknowledged (optional) → released.
        private let phase = Mutex(Phase.held)
        fileprivate enum Phase { case held, acknowledged, released }

        fileprivate init(_ slots: ActivitySlots) { self.slots = slots }

        /// The activity's task is about to be acknowledged while it still runs (its start was
        /// confirmed). Call it before the acknowledgement goes out: the worker's `full(true)`
        /// must stop the deliveries before the acknowledgement frees the prefetch window.
        func acknowledgedEarly() {
            slots.state.withLock { state in
                let marked = phase.withLock { phase in
                    guard phase == .held else { return false }
                    phase = .acknowledged
                    return true
                }
                guard marked else { return }
                state.acknowledged += 1
                guard state.acknowledged == slots.count else { return }
                let handedBack = state.waiting
                state.waiting.removeAll()
                slots.full(true)
                for turn in handedBack { turn.handBack() }
            }
        }

        func release() {
            let was = phase.withLock { phase in
                defer { phase = .released }
                return phase
            }
            guard was != .released else { return }
            slots.giveBack(acknowledged: was == .acknowledged)
        }
    }

    /// A place in line for a slot; ``slot()`` waits until it is this one's.
    final class Turn: Sendable {
        private let slots: ActivitySlots
        private enum Outcome { case granted, handedBack }
        private let state = Mutex((outcome: Outcome?.none, waiter: CheckedContinuation<Outcome, Never>?.none))

        fileprivate init(_ slots: ActivitySlots) { self.slots = slots }

        fileprivate func grant() { decide(.granted) }
        fileprivate func handBack() { decide(.handedBack) }

        private func decide(_ outcome: Outcome) {
            let waiter = state.withLock { state in
                state.outcome = outcome
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: outcome)
        }

        /// Waits for the slot and takes it; nil if the turn was handed back: every slot holds an
        /// activity that may run for hours, and the delivery must go back unrun.
        func slot() async -> Slot? {
            let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let outcome = state.withLock { state in
                    if state.outcome == nil { state.waiter = continuation }
                    return state.outcome
                }
                if let outcome { continuation.resume(returning: outcome) }
            }
            return outcome == .granted ? Slot(slots) : nil
        }
    }

    /// Takes a place in line, now, on the caller's thread: a free slot if there is one, else
    /// behind those already waiting; handed back at once while every slot holds an acknowledged
    /// activity.
    func reserve() -> Turn {
        let turn = Turn(self)
        enum Place { case free, waiting, handedBack }
        let place = state.withLock { state -> Place in
            if state.acknowledged == count { return .handedBack }
            if state.free > 0 {
                state.free -= 1
                return .free
            }
            state.waiting.append(turn)
            return .waiting
        }
        switch place {
        case .free: turn.grant()
        case .handedBack: turn.handBack()
        case .waiting: break
        }
        return turn
    }

    /// Gives a slot back (to the longest waiter, if any).
    private func giveBack(acknowledged: Bool) {
        let next = state.withLock { state -> Turn? in
            if acknowledged {
                if state.acknowledged == count { full(false) }
                state.acknowledged -= 1
            }
            if state.waiting.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.grant()
    }
}
