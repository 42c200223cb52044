import Foundation
import GRDB
import GRDBSQLite
import Keel
import KeelTestKit
import Testing

@testable import KeelHistory

/// What a commit writes reads back as it was: the store binds the rows every step writes through
/// SQLite's C API (`BoundStatement`), and saves a run that only moved on with an update of those
/// columns alone.
@Suite("Writing runs and events", .tags(.unit))
struct HistoryWritesTests {
    func store() throws -> SQLiteHistoryStore {
        try SQLiteHistoryStore(path: makeTemporaryDirectory("keel-writes").appendingPathComponent("keel.sqlite").path)
    }

    func save(_ run: RunRecord, in store: SQLiteHistoryStore) throws {
        var batch = StoreBatch()
        batch.runs = [run]
        try store.commit(batch)
    }

    @Test func aRunSavedAgainKeepsWhatOnlyItsInsertWroteAndTakesEveryChange() throws {
        let store = try store()
        let created = Date(timeIntervalSince1970: 1_800_000_000)
        var run = RunRecord(
            workflowId: "order-7", runId: "run-7", workflowType: "orders", status: .running,
            input: Payload(data: Data(#"{"order":"é🚀"}"#.utf8)), requestId: "request-7", parentRunId: "parent",
            parentSeq: 3, createdAt: created, randomSeed: UInt64.max - 1,
            options: WorkflowOptions(executionTimeout: .seconds(60), priority: 2, fairnessKey: "tenant-a"),
            executionDeadline: created.addingTimeInterval(60))
        try save(run, in: store)
        #expect(try store.run(runId: "run-7") == run)

        // Moved on: its length, time and spend.
        run.historyLength = 9
        run.updatedAt = created.addingTimeInterval(5)
        run.inputTokens = 120
        run.outputTokens = 80
        run.costUSD = 0.25
        try save(run, in: store)
        #expect(try store.run(runId: "run-7") == run)

        // Blocked and running again: the status changes, nothing else.
        for status in [RunStatus.blocked, .running] {
            run.status = status
            run.updatedAt += 1
            try save(run, in: store)
            #expect(try store.run(runId: "run-7") == run)
            #expect(try store.runs(status: status, limit: 10).map(\.runId) == ["run-7"])
        }

        // Closed with a failure.
        run.status = .failed
        run.failure = Failure(type: "Refused", message: "ünïcode and \"quotes\"", nonRetryable: true)
        run.closedAt = created.addingTimeInterval(20)
        run.updatedAt = created.addingTimeInterval(20)
        run.historyLength = 12
        try save(run, in: store)
        #expect(try store.run(runId: "run-7") == run)
        #expect(try store.runs(status: .running, limit: 10).isEmpty)
        #expect(try store.runs(status: .failed, limit: 10).map(\.runId) == ["run-7"])

        // A run that completes with a result in the batch that inserts it.
        var quick = RunRecord(
            workflowId: "quick", runId: "run-8", workflowType: "orders", status: .completed, input: Payload(data: Data("1".utf8)),
            requestId: nil, createdAt: created, randomSeed: 0, options: WorkflowOptions(), executionDeadline: nil)
        quick.result = Payload(data: Data(#""done""#.utf8))
        quick.closedAt = created
        quick.historyLength = 2
        try save(quick, in: store)
        #expect(try store.run(runId: "run-8") == quick)
        #expect(try store.run(runId: "run-7") == run)
    }

    @Test func eventsReadBackWithEveryFieldAsWritten() throws {
        let store = try store()
        let time = Date(timeIntervalSince1970: 1_800_000_000.5)
        let events = [
            HistoryEvent(id: 1, time: time, kind: .workflowStarted, payload: Payload(data: Data("{}".utf8))),
            HistoryEvent(
                id: 2, time: time, kind: .activityScheduled, ref: 1, name: "résumé 🚀", attempt: 1,
                payload: Payload(data: Data()), attributes: Payload(data: Data(#"{"taskQueue":"llm"}"#.utf8))),
            HistoryEvent(
                id: 3, time: time.addingTimeInterval(1), kind: .activityFailed, ref: 1, name: "worker-1", attempt: 2,
                failure: Failure(type: "RateLimited", message: "429", nextRetryDelay: 1.5)),
            HistoryEvent(id: 4, time: time.addingTimeInterval(2), kind: .workflowCompleted)
        ]
        var batch = StoreBatch()
        batch.events = events.map { (runId: "run-1", event: $0) }
        try store.commit(batch)
        #expect(try store.events(runId: "run-1") == events)
    }

    /// The store runs BEGIN and COMMIT itself (cached statements): a commit that fails after it
    /// wrote rows must roll them back and leave no transaction open for the next one.
    @Test func aCommitThatFailsPartWayWritesNothingAndTheNextCommitGoesThrough() throws {
        let store = try store()
        let run = RunRecord(
            workflowId: "order-8", runId: "run-8", workflowType: "orders", status: .running, input: .null,
            requestId: nil, createdAt: Date(timeIntervalSince1970: 1_800_000_000), randomSeed: 8,
            options: WorkflowOptions(), executionDeadline: nil)
        let started = HistoryEvent(id: 1, time: Date(timeIntervalSince1970: 1_800_000_000), kind: .workflowStarted)
        var failing = StoreBatch()
        failing.runs = [run]
        // The run's row and the first event are written before the second event's key clashes.
        failing.events = [(runId: "run-8", event: started), (runId: "run-8", event: started)]
        #expect(throws: StoreError.self) { try store.commit(failing) }
        #expect(try store.run(runId: "run-8") == nil)
        #expect(try store.events(runId: "run-8").isEmpty)

        var batch = StoreBatch()
        batch.runs = [run]
        batch.events = [(runId: "run-8", event: started)]
        try store.commit(batch)
        #expect(try store.run(runId: "run-8") == run)
        #expect(try store.events(runId: "run-8") == [started])
    }

    @Test func aValueSQLiteRefusesOrARowItRefusesFailsWithItsCodeAndTheNextRowIsWritten() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
            sqlite3_limit(db.sqliteConnection, SQLITE_LIMIT_LENGTH, 100)
            let insert = BoundStatement(try db.cachedStatement(sql: "INSERT INTO notes (id, text) VALUES (?, ?)"), in: db)
            // Refused when bound: longer than the connection's limit.
            #expect {
                try insert.run(1, String(repeating: "x", count: 200))
            } throws: { error in
                (error as? DatabaseError)?.resultCode == .SQLITE_TOOBIG
            }
            // Refused when run: NULL for a NOT NULL column.
            #expect {
                try insert.run(1, String?.none)
            } throws: { error in
                (error as? DatabaseError)?.resultCode == .SQLITE_CONSTRAINT
            }
            #expect(try insert.run(1, "é🚀") == 1)
            #expect(try String.fetchAll(db, sql: "SELECT text FROM notes") == ["é🚀"])
        }
    }
}
