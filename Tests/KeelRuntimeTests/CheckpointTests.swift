import Foundation
import Keel
import KeelTestKit
import Testing

@testable import KeelHistory

/// The coordinator's store copies its write-ahead log into the file from a thread of its own
/// (``WALCheckpointer``), not on the commit that fills the log. The megabytes these tests write
/// go through `offPool`, one test at a time, and no more than each needs: while several wrote
/// 20–70 MB each at once on the cooperative pool, a process test that polls for an activity
/// recorded as started missed it in three full-suite runs of eight.
@Suite("Checkpoints off the commit path", .tags(.unit), .serialized)
struct CheckpointTests {
    /// Commits `batches` transactions of 100 outbox rows of about 4 KiB each (about 100 pages of
    /// log per commit).
    func fill(_ store: SQLiteHistoryStore, batches: Int, from first: Int = 0) async throws {
        try await offPool { try Self.fill(store, batches: batches, from: first) }
    }

    static func fill(_ store: SQLiteHistoryStore, batches: Int, from first: Int) throws {
        let input = Payload(data: Data("\"\(String(repeating: "x", count: 4_000))\"".utf8))
        for batchNumber in first..<first + batches {
            var batch = StoreBatch()
            batch.outbox = (0..<100).map { index in
                ActivityTask(
                    workflowId: "w", runId: "run-\(batchNumber)", workflowType: "t", activityId: Int64(index),
                    activityType: "noop", attempt: 1, input: input, taskQueue: "default", scheduledAt: Date(),
                    attemptScheduledAt: Date(), startToCloseTimeout: nil, scheduleToCloseTimeout: nil, heartbeatTimeout: nil,
                    heartbeatDetails: nil)
            }
            try store.commit(batch)
        }
    }

    func size(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64) ?? 0
    }

    @Test func theLogIsCopiedIntoTheFileByTheThreadNotByTheCommit() async throws {
        let path = makeTemporaryDirectory("keel-checkpoint").appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        try store.checkpointInBackground()
        let checkpointer = try #require(store.checkpointer.withLock { $0 })
        let before = size(path)
        // About 2,200 pages of log: the thread is woken at each 1,000.
        try await fill(store, batches: 22)
        var waited = 0
        while checkpointer.counts.withLock({ $0.background }) < 2, waited < 100 {
            try await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
        let counts = checkpointer.counts.withLock { $0 }
        #expect(counts.background >= 2, "the thread checkpointed: \(counts)")
        #expect(counts.backstop == 0, "the committing connection never had to")
        // The rows are in the database file itself now, not only in the log.
        #expect(size(path) > before + 4_000_000, "the file grew from \(before) to \(size(path)) bytes")
        #expect(try store.outbox(skipping: []).count == 2_200)
    }

    @Test func pastTheBackstopTheCommittingConnectionCheckpointsItself() async throws {
        let path = makeTemporaryDirectory("keel-checkpoint").appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        // A backstop of 1,100 pages instead of 16,384, for a test that writes less.
        try store.checkpointInBackground(backstopPages: 1_100)
        let checkpointer = try #require(store.checkpointer.withLock { $0 })
        // With the thread stopped, nothing copies the log until it reaches the backstop.
        checkpointer.stop()
        try await fill(store, batches: 25)
        #expect(checkpointer.counts.withLock { $0.backstop } >= 2)
        // The log restarts after each: it never holds much more than the backstop.
        #expect(size(path + "-wal") < Int64(1_100 + 200) * 4_200)
    }

    @Test func aStoreWithoutTheThreadKeepsSQLitesOwnCheckpoints() async throws {
        let path = makeTemporaryDirectory("keel-checkpoint").appendingPathComponent("keel.sqlite").path
        let store = try SQLiteHistoryStore(path: path)
        let before = size(path)
        try await fill(store, batches: 12)
        #expect(store.checkpointer.withLock { $0 } == nil)
        #expect(size(path) > before + 3_000_000, "SQLite checkpointed on commit")
    }
}

extension CheckpointTests {
    @Test func aReaderElsewhereSeesEveryCommitWhileTheThreadCheckpoints() async throws {
        let path = makeTemporaryDirectory("keel-checkpoint").appendingPathComponent("keel.sqlite").path
        let writer = try SQLiteHistoryStore(path: path)
        try writer.checkpointInBackground()
        let reader = try SQLiteHistoryStore(path: path)
        var record = ActivityRecord(
            runId: "run-x", activityId: 1, activityType: "noop", input: .null, options: ActivityOptions(), scheduledAt: Date())
        var stale = 0
        for round in 1...25 {
            record.attempt = round
            var batch = StoreBatch()
            batch.save(record)
            let saved = batch
            try await offPool { try writer.commit(saved) }
            try await fill(writer, batches: 1, from: round)
            if try reader.activities(runId: "run-x").first?.attempt != round { stale += 1 }
        }
        #expect(stale == 0)
    }
}
