import Foundation
import GRDB
import Keel
import KeelTestKit
import Testing

@testable import KeelHistory

/// A history written by an earlier version opens with this one: the migrations keep its rows.
@Suite("History schema migrations")
struct SchemaMigrationTests {
    /// v11 moves activities and outbox rows to tables in insertion order, and marks what the
    /// replication outbox held as log format 1.
    @Test func aVersion10HistoryKeepsItsOpenStepsAndOutbox() throws {
        let path = makeTemporaryDirectory("keel-migrate").appendingPathComponent("keel.sqlite").path
        let encoder = JSONEncoder()
        let scheduledAt = Date(timeIntervalSince1970: 1_000)
        let activities = (1...3).map { seq in
            ActivityRecord(
                runId: "run-\(seq % 2)", activityId: Int64(seq), activityType: "noop", input: .null,
                options: ActivityOptions(), scheduledAt: scheduledAt)
        }
        let tasks = activities.map { activity in
            ActivityTask(
                workflowId: "w", runId: activity.runId, workflowType: "t", activityId: activity.activityId,
                activityType: "noop", attempt: 1, input: .null, taskQueue: "default", scheduledAt: scheduledAt,
                attemptScheduledAt: scheduledAt, startToCloseTimeout: nil, scheduleToCloseTimeout: nil,
                heartbeatTimeout: nil, heartbeatDetails: nil)
        }
        do {
            let old = try DatabaseQueue(path: path)
            try SQLiteHistoryStore.migrator.migrate(old, upTo: "v10: restore point")
            try old.write { db in
                for activity in activities {
                    try db.execute(
                        sql: "INSERT INTO activities (run_id, activity_id, record) VALUES (?, ?, ?)",
                        arguments: [activity.runId, activity.activityId, try encoder.encode(activity)])
                }
                for (index, task) in tasks.enumerated() {
                    try db.execute(
                        sql: "INSERT INTO outbox (attempt_key, task, created_at) VALUES (?, ?, ?)",
                        arguments: [task.attemptKey, try encoder.encode(task), Double(index)])
                }
                try db.execute(
                    sql: "INSERT INTO replication_outbox (seq, epoch, changeset) VALUES (7, 1, ?)", arguments: [Data([1, 2])])
            }
            try old.close()
        }

        let store = try SQLiteHistoryStore(path: path)
        #expect(try store.activities(runId: "run-1").map(\.activityId) == [1, 3])
        #expect(try store.activities(runId: "run-0").map(\.activityId) == [2])
        #expect(try store.outbox(skipping: []) == tasks, "in the order they were written")
        #expect(try store.unconfirmedChanges().map(\.format) == [1], "recorded on the tables before v11")

        // Written again and deleted as before, by their keys.
        var batch = StoreBatch()
        var started = activities[0]
        started.state = .started
        batch.save(started)
        batch.deleteActivity(runId: "run-0", activityId: 2)
        batch.outbox = [tasks[0]]
        batch.deletedOutbox = [tasks[1].attemptKey]
        try store.commit(batch)
        #expect(try store.activities(runId: "run-1").map(\.state) == [.started, .scheduled])
        #expect(try store.activities(runId: "run-0").isEmpty)
        #expect(try store.outbox(skipping: []).map(\.attemptKey) == [tasks[2].attemptKey, tasks[0].attemptKey])
    }
}
