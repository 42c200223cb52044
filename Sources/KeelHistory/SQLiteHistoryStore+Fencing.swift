import Foundation
import GRDB
import KeelCore

// Fencing: of two coordinators on one history file, only the one that took the latest epoch
// writes. The lease (one exclusive queue per namespace) keeps a second one out; the epoch is the
// check inside every write transaction for a coordinator that lost its lease without knowing it
// yet (paused, cut off from the broker) while a standby took over.
extension SQLiteHistoryStore {
    /// Takes the next epoch for `holder` and fences this store with it: from now on, every
    /// commit fails once another coordinator has taken a later epoch of the same file.
    @discardableResult
    /// `atLeast`: the epoch a coordinator announced in the replicated log before taking over.
    public func takeEpoch(holder: String, atLeast minimum: Int64 = 0) throws -> Int64 {
        let epoch = try wrap("take the coordinator epoch") {
            try write { db in
                // Milliseconds since 1970 unless the file holds a later one: a coordinator on a
                // new file (a restore, another machine) still gets an epoch above the old ones.
                let previous = try Int64.fetchOne(db, sql: "SELECT epoch FROM coordinator_epoch WHERE id = 1") ?? 0
                let next = max(previous + 1, Int64(Date().timeIntervalSince1970 * 1000), minimum)
                try db.execute(
                    sql: """
                        INSERT INTO coordinator_epoch (id, epoch, holder, taken_at) VALUES (1, ?, ?, ?)
                        ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch, holder = excluded.holder,
                            taken_at = excluded.taken_at
                        """, arguments: [next, holder, Date().timeIntervalSince1970])
                return next
            }
        }
        fence.withLock { $0 = epoch }
        return epoch
    }

    /// The latest epoch taken, and by whom (nil: none yet).
    public func currentEpoch() throws -> (epoch: Int64, holder: String)? {
        try wrap("read the coordinator epoch") {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT epoch, holder FROM coordinator_epoch WHERE id = 1").map {
                    ($0["epoch"], $0["holder"])
                }
            }
        }
    }

    /// Throws, writing nothing, when this store is fenced with an epoch that is no longer the
    /// latest.
    func checkFence(_ db: Database) throws {
        guard let mine = fence.withLock({ $0 }) else { return }
        // Read without GRDB's row decoding: this runs in every commit.
        let current = try Int64.fetchOne(db.cachedStatement(sql: "SELECT epoch FROM coordinator_epoch WHERE id = 1")) ?? 0
        guard current != mine else { return }
        let holder = try String.fetchOne(db.cachedStatement(sql: "SELECT holder FROM coordinator_epoch WHERE id = 1")) ?? "?"
        throw StoreError(
            message:
                "history database \(path): another coordinator (\(holder)) took it over with epoch \(current); this one, epoch \(mine), writes nothing more",
            fenced: true)
    }
}
