import Synchronization

/// The highest coordinator epoch seen on tasks or replies: a coordinator takes a new epoch each
/// time it takes over a history, so anything from an older one comes from a coordinator that
/// lost its lease (paused, cut off) and is claimed (a task) or skipped (a reply).
final class EpochWatermark: Sendable {
    private let highest = Mutex<Int64>(0)

    /// Whether `epoch` is older than one seen before; records it otherwise.
    func isStale(_ epoch: Int64?) -> Bool {
        guard let epoch else { return false }
        return highest.withLock { highest in
            if epoch < highest { return true }
            highest = epoch
            return false
        }
    }
}
