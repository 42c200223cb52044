import CSQLiteSession
import Foundation
import GRDB
import KeelCore

/// The changes of one write transaction of the active coordinator, for the replicated history
/// log: SQLite's own changeset of every row it inserted, updated or deleted.
public struct HistoryChange: Sendable {
    /// The transaction's number in the history: 1 more than the one before it.
    public var seq: Int64
    /// The epoch of the coordinator that wrote it (nil: not fenced).
    public var epoch: Int64?
    /// A changeset of SQLite's session extension.
    public var changeset: Data
    /// The shape of the tables it was recorded on (``SQLiteHistoryStore/logFormat``).
    public var format: Int

    public init(seq: Int64, epoch: Int64?, changeset: Data, format: Int = SQLiteHistoryStore.logFormat) {
        self.seq = seq
        self.epoch = epoch
        self.changeset = changeset
        self.format = format
    }
}

/// Where the changes go (the coordinator's log publisher). ``record(_:)`` is called right after
/// each commit, in commit order; it must not block.
public protocol HistoryChangeSink: Sendable {
    func record(_ change: HistoryChange)
    /// The last transaction the log confirmed: rows of the replication outbox up to it are
    /// deleted.
    var confirmedThrough: Int64 { get }
}

/// A follower's place in the log: the last transaction its file holds, and the log offset it
/// came from (nil: none applied from the log yet).
public struct ReplicationPosition: Sendable, Equatable {
    public var seq: Int64
    public var followedOffset: Int64?

    public init(seq: Int64, followedOffset: Int64?) {
        self.seq = seq
        self.followedOffset = followedOffset
    }
}

// Replication: every write transaction recorded as a changeset while a sink is set, and
// changesets of another file applied in order (a standby following the log).
extension SQLiteHistoryStore {
    /// The shape of the tables this version's changesets are recorded on: 1 up to migration v10,
    /// 2 since v11 (activities and outbox keyed in insertion order). SQLite applies a changeset
    /// only to a table of the same shape and skips the others without a word, so a follower
    /// refuses a transaction of another format.
    public static let logFormat = 2

    /// From now on every write transaction's changes go to `sink`, numbered.
    public func replicate(to sink: any HistoryChangeSink) {
        changeSink.withLock { $0 = sink }
    }

    /// Runs `body` in a write transaction; with a sink set, records what it changed (with the
    /// next `seq`, written in the same transaction), keeps it in the replication outbox (a
    /// crash before the log confirmed it publishes it again: ``unconfirmedChanges()``), and
    /// hands it to the sink once committed. A transaction that changed nothing takes no number.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try immediateTransaction { db in
            guard let sink = changeSink.withLock({ $0 }), let connection = db.sqliteConnection else { return try body(db) }
            // Outside the recorded changes: followers have no replication outbox of their own.
            try db.cachedStatement(sql: "DELETE FROM replication_outbox WHERE seq <= ?")
                .execute(arguments: [sink.confirmedThrough])
            let before = db.totalChangesCount
            let ((result, seq), changeset) = try recordChanges(on: connection) { () throws -> (T, Int64?) in
                let result = try body(db)
                guard db.totalChangesCount != before else { return (result, nil) }
                try db.cachedStatement(sql: "UPDATE replication SET seq = seq + 1 WHERE id = 1").execute()
                return (result, try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM replication WHERE id = 1")))
            }
            guard let seq else { return result }
            let epoch = try Int64.fetchOne(db.cachedStatement(sql: "SELECT epoch FROM coordinator_epoch WHERE id = 1"))
            let change = HistoryChange(seq: seq, epoch: epoch, changeset: changeset)
            try db.cachedStatement(
                sql: "INSERT INTO replication_outbox (seq, epoch, changeset, format) VALUES (?, ?, ?, ?)"
            )
            .execute(arguments: [seq, epoch, changeset, Self.logFormat])
            db.afterNextTransaction { _ in sink.record(change) }
            return result
        }
    }

    /// GRDB's `write`, with BEGIN and COMMIT run as cached statements: `Database.inTransaction`
    /// prepares both again for every transaction, which cost each commit (one per coordinator
    /// step when steps come one at a time) about 10 µs.
    private func immediateTransaction<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
            do {
                let result = try body(db)
                try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
                return result
            } catch {
                // A failed COMMIT (the file busy, the disk full) leaves the transaction open.
                if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK TRANSACTION") }
                throw error
            }
        }
    }

    /// Runs `body` while SQLite's session extension records every change to the database, and
    /// returns its result with the changeset of those changes.
    private func recordChanges<T>(on connection: SQLiteConnection, _ body: () throws -> T) throws -> (T, Data) {
        var session: UnsafeMutableRawPointer?
        try check(keel_session_begin(UnsafeMutableRawPointer(connection), &session), "start recording changes")
        defer { keel_session_end(session) }
        let result = try body()
        var count: Int32 = 0
        var bytes: UnsafeMutableRawPointer?
        try check(keel_session_changeset(session, &count, &bytes), "read the recorded changes")
        defer { keel_session_free_bytes(bytes) }
        return (result, bytes.map { Data(bytes: $0, count: Int(count)) } ?? Data())
    }

    /// What this file committed that the log may not have confirmed (a crash came first), in
    /// order: published again at start, before anything else.
    public func unconfirmedChanges() throws -> [HistoryChange] {
        try wrap("read the replication outbox") {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT seq, epoch, changeset, format FROM replication_outbox ORDER BY seq").map {
                    HistoryChange(seq: $0["seq"], epoch: $0["epoch"], changeset: $0["changeset"], format: $0["format"])
                }
            }
        }
    }

    private func check(_ code: Int32, _ what: String) throws {
        guard code != 0 else { return }
        throw StoreError(
            message: "history database \(path): cannot \(what) for replication (SQLite code \(code))", resultCode: code)
    }

    /// Where this file is in the log.
    public func replicationPosition() throws -> ReplicationPosition {
        try wrap("read the replication position") {
            try pool.read { db in
                let row = try Row.fetchOne(db, sql: "SELECT seq, followed_offset FROM replication WHERE id = 1")
                return ReplicationPosition(seq: row?["seq"] ?? 0, followedOffset: row?["followed_offset"])
            }
        }
    }

    /// Applies the next transactions of the log, in order (the first one's `seq` must be 1 more
    /// than this file's, each next one 1 more again), and records `offset` as the log offset
    /// read, in one transaction (no changes: only the offset, for entries skipped as stale or
    /// already held). A changeset that does not fit this file (a row missing, different or
    /// already there) changes nothing and throws: the file did not start from the same history
    /// as the log.
    public func apply(_ changes: [HistoryChange], readThrough offset: Int64) throws {
        try wrap("apply replicated transactions") {
            try pool.write { db in
                var seq = try Int64.fetchOne(db, sql: "SELECT seq FROM replication WHERE id = 1") ?? 0
                guard let connection = db.sqliteConnection else { return }
                for change in changes {
                    guard change.seq == seq + 1 else {
                        throw StoreError(
                            message:
                                "history database \(path) holds the log up to transaction \(seq), and the next in the log is \(change.seq): start the standby from a backup of the active coordinator's history (keel backup) taken after transaction \(change.seq - 1)"
                        )
                    }
                    guard change.format == Self.logFormat else {
                        throw StoreError(
                            message:
                                "history database \(path): the log's transaction \(change.seq) is in history log format \(change.format), and this Keel version reads format \(Self.logFormat): the active coordinator and this standby run Keel versions whose history tables differ; run the same version on both, then start the standby from a backup of the active coordinator's history (keel backup)"
                        )
                    }
                    var conflicts: Int32 = 0
                    let code = change.changeset.withUnsafeBytes { bytes in
                        keel_changeset_apply(
                            UnsafeMutableRawPointer(connection), Int32(bytes.count), bytes.baseAddress, &conflicts)
                    }
                    guard code == 0, conflicts == 0 else {
                        throw StoreError(
                            message:
                                "history database \(path): the log's transaction \(change.seq) does not fit this file (\(conflicts) conflicting row(s), SQLite code \(code)): it did not start from the same history as the active coordinator's; start the standby from a backup of it (keel backup)"
                        )
                    }
                    seq = change.seq
                }
                try db.execute(sql: "UPDATE replication SET followed_offset = ? WHERE id = 1", arguments: [offset])
            }
        }
    }
}
