import Foundation
import Keel
import KeelTestKit
import Synchronization
import Testing

/// The replicated history at the store: every write transaction recorded as a changeset, numbered,
/// kept until the log confirms it; a follower's file made equal to the writer's by applying them
/// in order, and refusing what does not follow on.
@Suite("Replicated history: changesets between two files")
struct HistoryReplicationTests {
    final class Collected: HistoryChangeSink, @unchecked Sendable {
        let changes = Mutex<[HistoryChange]>([])
        let confirmed = Mutex<Int64>(0)
        func record(_ change: HistoryChange) { changes.withLock { $0.append(change) } }
        var confirmedThrough: Int64 { confirmed.withLock { $0 } }
    }

    static func run(_ id: String, status: RunStatus = .running) -> RunRecord {
        RunRecord(
            workflowId: id, runId: "run-\(id)", workflowType: "t", status: status, input: .null, requestId: nil,
            createdAt: Date(timeIntervalSince1970: 1_000), randomSeed: 1, options: WorkflowOptions(), executionDeadline: nil)
    }

    @Test func aFollowerThatAppliesTheChangesInOrderHoldsTheSameHistory() throws {
        let directory = makeTemporaryDirectory("keel-replication")
        let active = try SQLiteHistoryStore(path: directory.appendingPathComponent("active.sqlite").path)
        let sink = Collected()
        active.replicate(to: sink)
        let epoch = try active.takeEpoch(holder: "host-a:1")
        var batch = StoreBatch()
        batch.runs = [Self.run("a"), Self.run("b")]
        batch.events = [("run-a", HistoryEvent(id: 1, time: Date(timeIntervalSince1970: 1_001), kind: .workflowStarted))]
        // An open step of each run: its activity and its task in the outbox (the one of "b"
        // stays, the one of "a" goes with the next commit).
        for id in ["a", "b"] {
            let activity = ActivityRecord(
                runId: "run-\(id)", activityId: 1, activityType: "noop", input: .null, options: ActivityOptions(),
                scheduledAt: Date(timeIntervalSince1970: 1_001))
            batch.save(activity)
            batch.outbox.append(
                ActivityTask(
                    workflowId: id, runId: "run-\(id)", workflowType: "t", activityId: 1, activityType: "noop", attempt: 1,
                    input: .null, taskQueue: "default", scheduledAt: activity.scheduledAt,
                    attemptScheduledAt: activity.scheduledAt, startToCloseTimeout: nil, scheduleToCloseTimeout: nil,
                    heartbeatTimeout: nil, heartbeatDetails: nil))
        }
        try active.commit(batch)
        var closing = StoreBatch()
        var closed = Self.run("a", status: .completed)
        closed.closedAt = Date(timeIntervalSince1970: 1_002)
        closing.runs = [closed]
        closing.deleteActivity(runId: "run-a", activityId: 1)
        closing.deletedOutbox = ["run-a/1/1"]
        try active.commit(closing)
        try active.commit(StoreBatch())  // nothing changed: no number taken
        try active.pruneClosedRuns(closedBefore: Date(timeIntervalSince1970: 2_000))

        let changes = sink.changes.withLock { $0 }
        #expect(changes.map(\.seq) == [1, 2, 3, 4], "the epoch, two commits and the prune")
        #expect(changes.allSatisfy { $0.epoch == epoch })
        #expect(try active.unconfirmedChanges().map(\.seq) == [1, 2, 3, 4], "kept until the log confirms them")
        sink.confirmed.withLock { $0 = 3 }
        var another = StoreBatch()
        another.runs = [Self.run("c")]
        try active.commit(another)  // the next write drops what the log confirmed
        #expect(try active.unconfirmedChanges().map(\.seq) == [4, 5])

        let follower = try SQLiteHistoryStore(path: directory.appendingPathComponent("standby.sqlite").path)
        let all = sink.changes.withLock { $0 }
        try follower.apply(all, readThrough: 4)
        #expect(try follower.replicationPosition() == ReplicationPosition(seq: 5, followedOffset: 4))
        #expect(try follower.run(runId: "run-a") == nil, "pruned on both")
        #expect(try follower.run(runId: "run-b")?.workflowId == "b")
        #expect(try follower.run(runId: "run-c")?.workflowId == "c")
        #expect(try follower.events(runId: "run-b").isEmpty)
        #expect(try follower.activities(runId: "run-b").map(\.activityType) == ["noop"])
        #expect(try follower.activities(runId: "run-a").isEmpty)
        #expect(try follower.outbox(skipping: []).map(\.attemptKey) == ["run-b/1/1"])
        #expect(try follower.outbox(skipping: []) == (try active.outbox(skipping: [])))
        #expect(try follower.currentEpoch()?.epoch == epoch)
        #expect(try follower.unconfirmedChanges().isEmpty, "a follower keeps no outbox of its own")

        // A transaction recorded on tables of another shape (another Keel version) is refused:
        // SQLite would skip its changes to those tables without a word.
        var older = all[4]
        older.seq = 6
        older.format = 1
        let format = #expect(throws: StoreError.self) { try follower.apply([older], readThrough: 5) }
        #expect(format?.message.contains("is in history log format 1") == true, "\(String(describing: format))")
        #expect(try follower.replicationPosition().seq == 5)

        // A transaction that does not follow on is refused, and so is one that does not fit.
        let gap = #expect(throws: StoreError.self) { try follower.apply([all[2]], readThrough: 9) }
        #expect(gap?.message.contains("holds the log up to transaction 5, and the next in the log is 3") == true)
        // A file with a history of its own (run "a" written outside the log) cannot take it.
        let other = try SQLiteHistoryStore(path: directory.appendingPathComponent("other.sqlite").path)
        var own = StoreBatch()
        own.runs = [Self.run("a")]
        try other.commit(own)
        try other.apply([all[0]], readThrough: 0)
        let misfit = #expect(throws: StoreError.self) { try other.apply([all[1]], readThrough: 1) }
        #expect(misfit?.message.contains("does not fit this file") == true, "\(String(describing: misfit))")
        #expect(try other.replicationPosition().seq == 1, "nothing of the refused transaction was applied")
    }
}
