import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Copies the write-ahead log into the database file from a thread and a connection of its own,
/// so that commits no longer wait for it.
///
/// By default SQLite checkpoints on the committing connection once the log holds 1,000 pages: at
/// `bench throughput` rates that was a checkpoint every 30 ms on the coordinator's commit path,
/// each stalling it for 5–20 ms in `fdatasync`. With this, the writer's commit hook wakes the
/// thread at each 1,000 pages, which runs a passive checkpoint (one that never blocks a commit);
/// the writer still checkpoints by itself past ``backstopPages``, should the thread fall behind.
final class WALCheckpointer: Sendable {
    /// Pages of log between two checkpoints: SQLite's own default.
    static let pages = 1_000
    /// Log pages past which the committing connection checkpoints by itself (64 MiB).
    static let backstopPages = 16_384
    let backstopPages: Int

    private let connection: DatabaseQueue
    /// Pages of log at which the thread is woken next (it is reset when the log restarts).
    private let nextWake = Mutex(pages)
    private let state = Mutex((requested: false, stopped: false))
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    /// Checkpoints run by the thread, and by the committing connection (the backstop).
    let counts = Mutex((background: 0, backstop: 0, failed: 0))

    /// Opens a connection of its own to the database at `path` and starts the thread; nothing
    /// happens until ``install(on:)``.
    init(path: String, backstopPages: Int = WALCheckpointer.backstopPages) throws {
        self.backstopPages = backstopPages
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        connection = try DatabaseQueue(path: path, configuration: configuration)
        let thread = Thread { [self] in run() }
        thread.name = "keel.history.checkpoint"
        thread.start()
    }

    /// Takes over checkpoints from the writer connection `db` (this object must outlive the hook:
    /// ``uninstall(from:)`` removes it).
    func install(on db: Database) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_wal_hook(
            db.sqliteConnection,
            { context, connection, _, pages in
                guard let context else { return SQLITE_OK }
                Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue().committed(logPages: Int(pages), connection)
                return SQLITE_OK
            }, context)
    }

    /// Gives checkpoints back to SQLite's own, on the committing connection.
    func uninstall(from db: Database) {
        sqlite3_wal_autocheckpoint(db.sqliteConnection, Int32(Self.pages))
    }

    /// After each commit, on the committing connection: the log now holds `logPages` pages.
    private func committed(logPages: Int, _ connection: OpaquePointer?) {
        if logPages >= backstopPages {
            sqlite3_wal_checkpoint_v2(connection, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            counts.withLock { $0.backstop += 1 }
            return
        }
        let wake = nextWake.withLock { next in
            if logPages < next - Self.pages { next = Self.pages }  // the log restarted
            guard logPages >= next else { return false }
            next = logPages + Self.pages
            return true
        }
        guard wake else { return }
        state.withLock { $0.requested = true }
        wakeup.signal()
    }

    /// Stops the thread, after a checkpoint under way.
    func stop() {
        let first = state.withLock { state in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        wakeup.signal()
        finished.wait()
    }

    private func run() {
        defer { finished.signal() }
        while true {
            wakeup.wait()
            let (requested, stopped) = state.withLock { state in
                defer { state.requested = false }
                return (state.requested, state.stopped)
            }
            if stopped { return }
            guard requested else { continue }
            do {
                try connection.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(PASSIVE)") }
                counts.withLock { $0.background += 1 }
            } catch {
                // Busy (the writer's own backstop checkpoint runs): the next wake tries again.
                counts.withLock { $0.failed += 1 }
            }
        }
    }
}
