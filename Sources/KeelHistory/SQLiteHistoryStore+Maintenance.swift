import Foundation
import GRDB
import KeelCore

// Retention and backups: deleting old closed runs in small batches, and a consistent copy of a
// history that a coordinator may be writing to.
extension SQLiteHistoryStore {
    /// The runs retention deletes: closed before the argument, never open or blocked.
    private static let closedBefore = """
        closed_at IS NOT NULL AND closed_at < ? AND status NOT IN ('running', 'blocked')
        """

    /// Deletes up to `limit` runs closed before `date`, oldest first, with their events and any
    /// rows they left; open and blocked runs are never touched. One transaction per call, so
    /// that a coordinator writing to the same file waits at most for one small batch. Returns how
    /// many runs were deleted.
    @discardableResult
    public func pruneClosedRuns(closedBefore date: Date, limit: Int = 500) throws -> Int {
        try wrap("prune closed runs") {
            try write { db in
                try checkFence(db)
                let ids = try String.fetchAll(
                    db,
                    sql: "SELECT run_id FROM runs WHERE \(Self.closedBefore) ORDER BY closed_at LIMIT ?",
                    arguments: [date.timeIntervalSince1970, limit])
                guard !ids.isEmpty else { return 0 }
                let placeholders = Array(repeating: "?", count: ids.count).joined(separator: ", ")
                let arguments = StatementArguments(ids)
                for table in ["events", "activities", "timers", "stalled_runs", "runs"] {
                    try db.execute(sql: "DELETE FROM \(table) WHERE run_id IN (\(placeholders))", arguments: arguments)
                }
                return ids.count
            }
        }
    }

    /// How many runs closed before `date` there are (what a prune would delete).
    public func closedRunCount(closedBefore date: Date) throws -> Int {
        try wrap("count closed runs") {
            try pool.read { db in
                try Int.fetchOne(
                    db,
                    sql: "SELECT COUNT(*) FROM runs WHERE \(Self.closedBefore)", arguments: [date.timeIntervalSince1970]) ?? 0
            }
        }
    }

    /// Writes a consistent copy of the history to `path` (SQLite's `VACUUM INTO`: a snapshot as
    /// of one moment, even while a coordinator commits), then checks it with
    /// `PRAGMA integrity_check`. Refuses a path that exists.
    public func backup(to path: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError(message: "cannot back up to \(path): it exists; give a new file (nothing was written)")
        }
        try wrap("back up the history to \(path)") {
            try pool.writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [path]) }
        }
        // The copy knows it is one: a coordinator started on it publishes again what was
        // published before the copy and may have been answered to the original since. Marked,
        // then checked, on one connection.
        let verdict = try wrap("mark and check the copy at \(path)") {
            let copy = try DatabaseQueue(path: path)
            defer { try? copy.close() }
            return try copy.write { db in
                try db.execute(
                    sql: "INSERT OR REPLACE INTO restore_point (id, taken_at) VALUES (1, ?)",
                    arguments: [Date().timeIntervalSince1970])
                return try String.fetchAll(db, sql: "PRAGMA integrity_check")
            }
        }
        guard verdict == ["ok"] else {
            throw StoreError(
                message: "the copy at \(path) fails its integrity check: \(verdict.prefix(5).joined(separator: "; "))")
        }
    }

    public func restorePoint() throws -> Date? {
        try wrap("read the restore point") {
            try pool.read { db in
                try Double.fetchOne(db, sql: "SELECT taken_at FROM restore_point WHERE id = 1").map(
                    Date.init(timeIntervalSince1970:))
            }
        }
    }

    /// Not replicated: the mark belongs to this file (a standby seeded from the backup has its
    /// own, and the log's followers none).
    public func clearRestorePoint() throws {
        try wrap("clear the restore point") {
            try pool.write { db in try db.execute(sql: "DELETE FROM restore_point") }
        }
    }
}
