import Foundation
import GRDB
import KeelCore

// Writing: one unit of work in one transaction.
extension SQLiteHistoryStore {
    public func commit(_ batch: StoreBatch) throws {
        guard !batch.isEmpty else { return }
        let encoder = JSONEncoder()
        try wrap("commit") {
            try write { db in
                try checkFence(db)
                // Each statement is looked up once per commit, not once per row (the lookup
                // hashes the statement's text).
                if !batch.runs.isEmpty {
                    // Most saves of a run only move it on (its length, time and spend): an update
                    // of those columns alone touches none of the run's indexes and binds neither
                    // its input nor its options. It is tried first; then the update of a run whose
                    // status, result or failure changed; then the insert of a new run.
                    // The two updates take the same values in the same order (``save(_:failure:with:)``).
                    let progress = BoundStatement(
                        try db.cachedStatement(
                            sql: """
                                UPDATE runs SET updated_at = ?, history_length = ?, input_tokens = ?, output_tokens = ?,
                                    cost_usd = ?
                                WHERE status = ? AND closed_at IS ? AND result IS ? AND failure IS ? AND run_id = ?
                                """), in: db)
                    let close = BoundStatement(
                        try db.cachedStatement(
                            sql: """
                                UPDATE runs SET updated_at = ?, history_length = ?, input_tokens = ?, output_tokens = ?,
                                    cost_usd = ?, status = ?, closed_at = ?, result = ?, failure = ?
                                WHERE run_id = ?
                                """), in: db)
                    let insert = BoundStatement(
                        try db.cachedStatement(
                            sql: """
                                INSERT INTO runs (run_id, workflow_id, workflow_type, status, input, result, failure,
                                    request_id, parent_run_id, parent_seq, continued_from_run_id, created_at, updated_at,
                                    closed_at, history_length, random_seed, options, execution_deadline,
                                    input_tokens, output_tokens, cost_usd)
                                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                                """), in: db)
                    for run in batch.runs {
                        let failure = try run.failure.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
                        if try Self.save(run, failure: failure, with: progress) > 0 { continue }
                        if try Self.save(run, failure: failure, with: close) > 0 { continue }
                        // The options are kept only when the run is inserted.
                        let options = try encodedWorkflowOptions.encoding(of: run.options) {
                            String(decoding: try encoder.encode($0), as: UTF8.self)
                        }
                        try insert.run(
                            run.runId, run.workflowId, run.workflowType, run.status.rawValue, run.input.data,
                            run.result?.data, failure, run.requestId, run.parentRunId, run.parentSeq,
                            run.continuedFromRunId, run.createdAt.timeIntervalSince1970,
                            run.updatedAt.timeIntervalSince1970, run.closedAt?.timeIntervalSince1970, run.historyLength,
                            Int64(bitPattern: run.randomSeed), options, run.executionDeadline?.timeIntervalSince1970,
                            run.inputTokens, run.outputTokens, run.costUSD)
                    }
                }
                let insertEvent = BoundStatement(
                    try db.cachedStatement(
                        sql: """
                            INSERT INTO events (run_id, id, time, kind, ref, name, attempt, payload, failure, attributes)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """), in: db)
                for (runId, event) in batch.events {
                    try insertEvent.run(
                        runId, event.id, event.time.timeIntervalSince1970, event.kind.rawValue, event.ref, event.name,
                        event.attempt, event.payload?.data,
                        try event.failure.map { String(decoding: try encoder.encode($0), as: UTF8.self) },
                        event.attributes?.data)
                }
                for runId in batch.clearedRuns {
                    try db.cachedStatement(sql: "DELETE FROM timers WHERE run_id = ?").execute(arguments: [runId])
                    try db.cachedStatement(sql: "DELETE FROM activities WHERE run_id = ?").execute(arguments: [runId])
                }
                let activities = batch.activities
                if !activities.isEmpty {
                    let upsert = BoundStatement(
                        try db.cachedStatement(
                            sql: """
                                INSERT INTO activities (run_id, activity_id, record) VALUES (?, ?, ?)
                                ON CONFLICT(run_id, activity_id) DO UPDATE SET record = excluded.record
                                """), in: db)
                    let delete = BoundStatement(
                        try db.cachedStatement(sql: "DELETE FROM activities WHERE run_id = ? AND activity_id = ?"), in: db)
                    for change in activities {
                        if let activity = change.record {
                            let options = try encodedActivityOptions.encoding(of: activity.options) { try encoder.encode($0) }
                            var json = JSONWriter(dates: .sinceReferenceDate)
                            try activity.write(to: &json, encodedOptions: options)
                            try upsert.run(activity.runId, activity.activityId, json.data)
                        } else {
                            try delete.run(change.runId, change.activityId)
                        }
                    }
                }
                let timers = batch.timers
                if !timers.isEmpty {
                    let upsert = try db.cachedStatement(
                        sql: """
                            INSERT OR REPLACE INTO timers (run_id, key, kind, seq, fire_at, attempt) VALUES (?, ?, ?, ?, ?, ?)
                            """)
                    let delete = try db.cachedStatement(sql: "DELETE FROM timers WHERE run_id = ? AND key = ?")
                    for change in timers {
                        if let timer = change.record {
                            try upsert.execute(arguments: [
                                timer.runId, timer.key, timer.kind.rawValue, timer.seq,
                                timer.fireAt.timeIntervalSince1970, timer.attempt
                            ])
                        } else {
                            try delete.execute(arguments: [change.runId, change.key])
                        }
                    }
                }
                if !batch.outbox.isEmpty {
                    let insert = BoundStatement(
                        try db.cachedStatement(
                            sql: """
                                INSERT INTO outbox (attempt_key, task, created_at) VALUES (?, ?, ?)
                                ON CONFLICT(attempt_key) DO UPDATE SET task = excluded.task, created_at = excluded.created_at
                                """), in: db)
                    let now = Date().timeIntervalSince1970
                    for task in batch.outbox {
                        var json = JSONWriter(dates: .sinceReferenceDate)
                        try task.write(to: &json)
                        try insert.run(task.attemptKey, json.data, now)
                    }
                }
                if !batch.deletedOutbox.isEmpty {
                    let delete = BoundStatement(try db.cachedStatement(sql: "DELETE FROM outbox WHERE attempt_key = ?"), in: db)
                    for key in batch.deletedOutbox { try delete.run(key) }
                }
                for entry in batch.deadLetters {
                    try db.cachedStatement(
                        sql: "INSERT OR REPLACE INTO dead_letter_outbox (id, entry, created_at) VALUES (?, ?, ?)"
                    )
                    .execute(arguments: [entry.id, try encoder.encode(entry), Date().timeIntervalSince1970])
                }
                for id in batch.deletedDeadLetters {
                    try db.cachedStatement(sql: "DELETE FROM dead_letter_outbox WHERE id = ?").execute(arguments: [id])
                }
                // Per-provider state, one row each (`keel breakers`, the admission's capacity).
                func upsert(_ table: String, _ provider: String, _ snapshot: some Encodable) throws {
                    try db.cachedStatement(
                        sql: """
                            INSERT INTO \(table) (provider, snapshot, updated_at) VALUES (?, ?, ?)
                            ON CONFLICT(provider) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at
                            """
                    ).execute(arguments: [provider, try encoder.encode(snapshot), Date().timeIntervalSince1970])
                }
                for breaker in batch.circuitBreakers { try upsert("circuit_breakers", breaker.provider, breaker) }
                for capacity in batch.providerCapacity { try upsert("provider_capacity", capacity.provider, capacity) }
                for schedule in batch.schedules {
                    try db.cachedStatement(
                        sql: """
                            INSERT INTO schedules (name, record, updated_at) VALUES (?, ?, ?)
                            ON CONFLICT(name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at
                            """
                    ).execute(arguments: [schedule.spec.name, try encoder.encode(schedule), Date().timeIntervalSince1970])
                }
                for name in batch.deletedSchedules {
                    try db.cachedStatement(sql: "DELETE FROM schedules WHERE name = ?").execute(arguments: [name])
                }
            }
        }
    }

    /// Runs one of the two updates of an existing run in `commit(_:)` (they take the same values
    /// in the same order); returns how many rows it changed.
    private static func save(_ run: RunRecord, failure: String?, with statement: BoundStatement) throws -> Int {
        try statement.run(
            run.updatedAt.timeIntervalSince1970, run.historyLength, run.inputTokens, run.outputTokens, run.costUSD,
            run.status.rawValue, run.closedAt?.timeIntervalSince1970, run.result?.data, failure, run.runId)
    }
}
