import Synchronization

/// The highest coordinator epoch seen on tasks or replies: a coordinator takes a new epoch each
/// time it takes over a history, so anything from an older one comes from a coordinator that
/// lost its lease (paused, cut off) or stopped, and is claimed (a task) or skipped (a reply).
///
/// A task's own epoch proves nothing about the coordinator running now: the first copy of a task
/// a coordinator published just before it stopped carries that coordinator's epoch, and looks
/// current to a worker that has heard of no newer one. So a worker also keeps whether a
/// coordinator told it its epoch itself (``heard(_:)``: its announcement on `keel.control`, or
/// the answer to a claim), and claims every task with an epoch until one has.
final class EpochWatermark: Sendable {
    private let state = Mutex((highest: Int64(0), heard: false))

    /// Whether `epoch` is older than one seen before; records it otherwise.
    func isStale(_ epoch: Int64?) -> Bool {
        guard let epoch else { return false }
        return state.withLock { state in
            if epoch < state.highest { return true }
            state.highest = epoch
            return false
        }
    }

    /// A coordinator said its epoch itself; an older one than seen before changes nothing.
    func heard(_ epoch: Int64?) {
        guard let epoch else { return }
        state.withLock { state in
            state.highest = max(state.highest, epoch)
            state.heard = true
        }
    }

    /// Whether a task of `epoch` is claimed before it runs: it is older than one seen before,
    /// or no coordinator has said its epoch yet (a task without one: never). Records it otherwise.
    func mustClaim(_ epoch: Int64?) -> Bool {
        guard let epoch else { return false }
        return state.withLock { state in
            if epoch < state.highest { return true }
            state.highest = epoch
            return !state.heard
        }
    }
}
