import CSQLiteWALBuffer
import Foundation
import GRDB
import GRDBSQLite
import Keel
import KeelTestKit
import Synchronization
import Testing

@testable import KeelHistory

/// A store's commits reach its write-ahead log in one write each (`CSQLiteWALBuffer`), and what
/// they wrote is what every other connection reads.
@Suite("A commit's log writes in one system call", .tags(.unit))
struct LogWriteBufferTests {
    func task(_ run: String, _ index: Int, size: Int) -> ActivityTask {
        ActivityTask(
            workflowId: "w", runId: run, workflowType: "t", activityId: Int64(index), activityType: "noop", attempt: 1,
            input: Payload(data: Data("\"\(String(repeating: "x", count: size))\"".utf8)), taskQueue: "default",
            scheduledAt: Date(), attemptScheduledAt: Date(), startToCloseTimeout: nil, scheduleToCloseTimeout: nil,
            heartbeatTimeout: nil, heartbeatDetails: nil)
    }

    func logCounts(_ store: SQLiteHistoryStore) -> (requested: UInt64, written: UInt64) {
        var requested: UInt64 = 0
        var written: UInt64 = 0
        let log = URL(fileURLWithPath: store.path).resolvingSymlinksInPath().path + "-wal"
        keel_wal_buffer_log_counts(log, &requested, &written)
        return (requested, written)
    }

    @Test func eachCommitReachesTheLogInOneWrite() throws {
        let path = makeTemporaryDirectory("keel-log-writes").appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        #expect(keel_wal_buffer_installed() != 0)
        let before = logCounts(store)
        // Three outbox rows of about 2 KiB per commit: several pages, each a frame of two writes.
        let commits = 40
        for commit in 0..<commits {
            var batch = StoreBatch()
            batch.outbox = (0..<3).map { task("run-\(commit)", $0, size: 2_000) }
            try store.commit(batch)
        }
        let after = logCounts(store)
        let requested = after.requested - before.requested
        let written = after.written - before.written
        #expect(requested >= UInt64(commits * 4), "SQLite asked \(requested) writes for \(commits) commits")
        #expect(written == UInt64(commits), "\(written) writes reached the log for \(commits) commits")
        #expect(try store.outbox(skipping: []).count == commits * 3)
    }

    /// Another connection sees each commit as soon as it returns, a transaction that fails
    /// leaves nothing behind, and the file reopened holds every row and passes SQLite's check.
    @Test func whatACommitWroteIsWhatOthersRead() throws {
        let path = makeTemporaryDirectory("keel-log-writes").appendingPathComponent("keel.sqlite").path
        var store: SQLiteHistoryStore? = try SQLiteHistoryStore(path: path)
        let reader = try DatabaseQueue(path: path)
        var committed = 0
        for commit in 0..<60 {
            var batch = StoreBatch()
            // Up to about 40 KiB in one commit, rows that overflow into pages of their own; every
            // fifteenth about 250 KiB, over the 128 KiB SQLite's unix VFS writes at most at once.
            let rows = commit % 15 == 14 ? 60 : 1 + commit % 7
            let size = commit % 15 == 14 ? 4_000 : 600 * (1 + commit % 10)
            batch.outbox = (0..<rows).map { task("run-\(commit)", $0, size: size) }
            try store?.commit(batch)
            committed += rows
            let seen = try reader.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM outbox") ?? -1 }
            #expect(seen == committed, "after commit \(commit)")
        }
        // A transaction that writes pages and then fails is rolled back whole.
        #expect(throws: (any Error).self) {
            try store?.pool.write { db in
                try db.execute(sql: "DELETE FROM outbox")
                throw CancellationError()
            }
        }
        #expect(try reader.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM outbox") } == committed)
        store = nil
        try reader.close()
        let reopened = try DatabaseQueue(path: path)
        let (check, rows) = try reopened.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"), try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox"))
        }
        #expect(check == "ok")
        #expect(rows == committed)
    }

    /// A log write that fails (here: no space left) fails the commit it belongs to, as it would
    /// without the buffer, and leaves nothing of it behind; the next commit goes through.
    @Test func aLogWriteThatFailsFailsItsCommit() throws {
        let path = makeTemporaryDirectory("keel-log-writes").appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        var first = StoreBatch()
        first.outbox = [task("run-0", 0, size: 2_000)]
        try store.commit(first)
        var second = StoreBatch()
        second.outbox = (1..<4).map { task("run-1", $0, size: 2_000) }
        let failed = try FailingLogWrites.during(log: URL(fileURLWithPath: path).resolvingSymlinksInPath().path + "-wal") {
            #expect(throws: (any Error).self) { try store.commit(second) }
        }
        #expect(failed > 0, "a write to the log failed")
        #expect(try store.outbox(skipping: []).count == 1)
        try store.commit(second)
        #expect(try store.outbox(skipping: []).count == 4)
        let check = try DatabaseQueue(path: path).read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }
        #expect(check == "ok")
    }
}

/// Makes SQLite's `pwrite64` fail with ENOSPC for one file, through the unix VFS's system-call
/// table (every other file, of every test, is written as before).
enum FailingLogWrites {
    private static let state = Mutex((path: String?.none, failed: 0))
    /// One test at a time replaces the call.
    private static let exclusive = Mutex(())

    static func during(log path: String, _ body: () throws -> Void) throws -> Int {
        try exclusive.withLock { _ in
            let vfs = try #require(sqlite3_vfs_find(nil))
            let failing: @convention(c) (Int32, UnsafeRawPointer?, Int, Int64) -> Int = { fd, buffer, count, offset in
                let target = FailingLogWrites.state.withLock { $0.path }
                if let target, FailingLogWrites.path(of: fd) == target {
                    FailingLogWrites.state.withLock { $0.failed += 1 }
                    errno = ENOSPC
                    return -1
                }
                return pwrite(fd, buffer, count, off_t(offset))
            }
            state.withLock { $0 = (path, 0) }
            #expect(
                vfs.pointee.xSetSystemCall(vfs, "pwrite64", unsafeBitCast(failing, to: sqlite3_syscall_ptr.self)) == SQLITE_OK)
            defer {
                _ = vfs.pointee.xSetSystemCall(vfs, "pwrite64", nil)
                state.withLock { $0.path = nil }
            }
            try body()
            return state.withLock { $0.failed }
        }
    }

    static func path(of fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
