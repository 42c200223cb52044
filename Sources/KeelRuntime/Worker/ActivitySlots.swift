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
/// An activity whose task is acknowledged while it runs (``Slot/acknowledgedEarly()``, one that
/// outlived the start report) no longer counts in RabbitMQ's prefetch window, which would then
/// fill with tasks waiting behind it, maybe for hours, while other workers idle (and past the
/// broker's `consumer_timeout`, which closes the channel). So the worker's window follows the
/// slots (``window(count:acknowledged:)``, given to `windowChanged` at each change): one task more
/// than the slots while none is held that way, else exactly the slots not held that way, and
/// none once all are. Then the waiting turns are handed back (``Turn/slot()`` returns nil: the
/// worker gives the task back unrun), and so are turns reserved until one of those slots is
/// given back.
final class ActivitySlots: Sendable {
    private struct State {
        var free: Int
        var waiting: [Turn] = []
        /// Slots held by activities whose tasks were acknowledged while they ran.
        var acknowledged = 0
    }
    private let count: Int
    private let state: Mutex<State>
    /// Given the prefetch window the worker's consumer should have, at each change of the
    /// acknowledged activities; under the slots' lock, so calls come in the order of the changes
    /// (it must not call back into the slots).
    private let windowChanged: @Sendable (Int) -> Void

    init(_ count: Int, window: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.count = count
        windowChanged = window
        state = Mutex(State(free: count))
    }

    /// The deliveries the worker should hold unacknowledged while `acknowledged` of its `count`
    /// slots run activities whose tasks are acknowledged: one more than the slots while none is
    /// (a short activity's task is acknowledged only once its result is confirmed, and the next
    /// one should not wait in RabbitMQ for that), else the other slots, without the one more: a
    /// task taken beyond them would wait while any of those turns long.
    static func window(count: Int, acknowledged: Int) -> Int {
        acknowledged == 0 ? count + 1 : count - acknowledged
    }

    /// Gives the worker its window for `acknowledged` such slots; under the slots' lock.
    fileprivate func announceWindow(acknowledged: Int) {
        windowChanged(Self.window(count: count, acknowledged: acknowledged))
    }

    /// A taken slot; ``release()`` gives it back, once however often it is called.
    final class Slot: Sendable {
        private let slots: ActivitySlots
        /// held → acknowledged (optional) → released.
        private let phase = Mutex(Phase.held)
        fileprivate enum Phase { case held, acknowledged, released }

        fileprivate init(_ slots: ActivitySlots) { self.slots = slots }

        /// The activity's task is about to be acknowledged while it still runs (its start was
        /// confirmed). Call it before the acknowledgement goes out: the smaller window it
        /// gives the worker must reach the broker before the acknowledgement frees room in the
        /// old one.
        func acknowledgedEarly() {
            slots.state.withLock { state in
                let marked = phase.withLock { phase in
                    guard phase == .held else { return false }
                    phase = .acknowledged
                    return true
                }
                guard marked else { return }
                state.acknowledged += 1
                slots.announceWindow(acknowledged: state.acknowledged)
                guard state.acknowledged == slots.count else { return }
                let handedBack = state.waiting
                state.waiting.removeAll()
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
                state.acknowledged -= 1
                announceWindow(acknowledged: state.acknowledged)
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
