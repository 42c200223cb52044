import Foundation
import GRDB
import KeelCore

/// The SQLite event store: one WAL database file per coordinator, opened once.
///
/// ```swift
/// let store = try SQLiteHistoryStore(path: ".keel/keel.sqlite")
/// ```
public final class SQLiteHistoryStore: HistoryStore {
    /// How hard commits are pushed to disk.
    public enum Durability: String, Sendable, CaseIterable {
        /// `synchronous=NORMAL`: a power loss may lose the last commits, a crash never does.
        case normal
        /// `synchronous=FULL`: fsync on every commit.
        case full
    }

    private let pool: DatabasePool
    public let path: String

    public init(path: String, durability: Durability = .normal) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw StoreError(message: "cannot open the history database at \(path): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE runs (
                    run_id TEXT PRIMARY KEY NOT NULL,
                    workflow_id TEXT NOT NULL,
                    workflow_type TEXT NOT NULL,
                    status TEXT NOT NULL,
                    input BLOB NOT NULL,
                    result BLOB,
                    failure TEXT,
                    request_id TEXT,
                    parent_run_id TEXT,
                    parent_seq INTEGER,
                    continued_from_run_id TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    closed_at REAL,
                    history_length INTEGER NOT NULL,
                    random_seed INTEGER NOT NULL,
                    options TEXT NOT NULL,
                    execution_deadline REAL,
                    input_tokens INTEGER NOT NULL DEFAULT 0,
                    output_tokens INTEGER NOT NULL DEFAULT 0,
                    cost_usd REAL NOT NULL DEFAULT 0
                );
                CREATE INDEX runs_by_workflow ON runs(workflow_id, created_at);
                CREATE INDEX runs_by_status ON runs(status, created_at);
                CREATE UNIQUE INDEX runs_by_request ON runs(request_id) WHERE request_id IS NOT NULL;
                CREATE TABLE events (
                    run_id TEXT NOT NULL,
                    id INTEGER NOT NULL,
                    time REAL NOT NULL,
                    kind TEXT NOT NULL,
                    ref INTEGER,
                    name TEXT,
                    attempt INTEGER,
                    payload BLOB,
                    failure TEXT,
                    attributes BLOB,
                    PRIMARY KEY (run_id, id)
                ) WITHOUT ROWID;
                CREATE TABLE activities (
                    run_id TEXT NOT NULL,
                    activity_id INTEGER NOT NULL,
                    record BLOB NOT NULL,
                    PRIMARY KEY (run_id, activity_id)
                ) WITHOUT ROWID;
                CREATE TABLE timers (
                    run_id TEXT NOT NULL,
                    key TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    fire_at REAL NOT NULL,
                    attempt INTEGER,
                    PRIMARY KEY (run_id, key)
                ) WITHOUT ROWID;
                CREATE INDEX timers_by_time ON timers(fire_at);
                CREATE TABLE outbox (
                    attempt_key TEXT PRIMARY KEY NOT NULL,
                    task BLOB NOT NULL,
                    created_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v2: dead-letter outbox") { db in
            try db.execute(sql: """
                CREATE TABLE dead_letter_outbox (
                    id TEXT PRIMARY KEY NOT NULL,
                    entry BLOB NOT NULL,
                    created_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v3: circuit breakers") { db in
            try db.execute(sql: """
                CREATE TABLE circuit_breakers (
                    provider TEXT PRIMARY KEY NOT NULL,
                    snapshot BLOB NOT NULL,
                    updated_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v4: stalled runs") { db in
            try db.execute(sql: """
                CREATE TABLE stalled_runs (
                    run_id TEXT PRIMARY KEY NOT NULL,
                    record BLOB NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        return migrator
    }

    // MARK: Writing

    public func commit(_ batch: StoreBatch) throws {
        guard !batch.isEmpty else { return }
        let encoder = JSONEncoder()
        try wrap("commit") {
            try pool.write { db in
                for run in batch.runs {
                    try db.cachedStatement(sql: """
                        INSERT INTO runs (run_id, workflow_id, workflow_type, status, input, result, failure,
                            request_id, parent_run_id, parent_seq, continued_from_run_id, created_at, updated_at,
                            closed_at, history_length, random_seed, options, execution_deadline,
                            input_tokens, output_tokens, cost_usd)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, result = excluded.result,
                            failure = excluded.failure, updated_at = excluded.updated_at,
                            closed_at = excluded.closed_at, history_length = excluded.history_length,
                            input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
                            cost_usd = excluded.cost_usd
                        """).execute(arguments: [
                            run.runId, run.workflowId, run.workflowType, run.status.rawValue, run.input.data,
                            run.result?.data, try run.failure.map { String(decoding: try encoder.encode($0), as: UTF8.self) },
                            run.requestId, run.parentRunId, run.parentSeq, run.continuedFromRunId,
                            run.createdAt.timeIntervalSince1970, run.updatedAt.timeIntervalSince1970,
                            run.closedAt?.timeIntervalSince1970, run.historyLength,
                            Int64(bitPattern: run.randomSeed),
                            String(decoding: try encoder.encode(run.options), as: UTF8.self),
                            run.executionDeadline?.timeIntervalSince1970,
                            run.inputTokens, run.outputTokens, run.costUSD,
                        ])
                }
                let insertEvent = try db.cachedStatement(sql: """
                    INSERT INTO events (run_id, id, time, kind, ref, name, attempt, payload, failure, attributes)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                for (runId, event) in batch.events {
                    try insertEvent.execute(arguments: [
                        runId, event.id, event.time.timeIntervalSince1970, event.kind.rawValue, event.ref,
                        event.name, event.attempt, event.payload?.data,
                        try event.failure.map { String(decoding: try encoder.encode($0), as: UTF8.self) },
                        event.attributes?.data,
                    ])
                }
                for runId in batch.clearedRuns {
                    try db.cachedStatement(sql: "DELETE FROM timers WHERE run_id = ?").execute(arguments: [runId])
                    try db.cachedStatement(sql: "DELETE FROM activities WHERE run_id = ?").execute(arguments: [runId])
                }
                for change in batch.activities {
                    if let activity = change.record {
                        try db.cachedStatement(sql: "INSERT OR REPLACE INTO activities (run_id, activity_id, record) VALUES (?, ?, ?)")
                            .execute(arguments: [activity.runId, activity.activityId, try encoder.encode(activity)])
                    } else {
                        try db.cachedStatement(sql: "DELETE FROM activities WHERE run_id = ? AND activity_id = ?")
                            .execute(arguments: [change.runId, change.activityId])
                    }
                }
                for change in batch.timers {
                    if let timer = change.record {
                        try db.cachedStatement(sql: """
                            INSERT OR REPLACE INTO timers (run_id, key, kind, seq, fire_at, attempt) VALUES (?, ?, ?, ?, ?, ?)
                            """).execute(arguments: [
                                timer.runId, timer.key, timer.kind.rawValue, timer.seq,
                                timer.fireAt.timeIntervalSince1970, timer.attempt,
                            ])
                    } else {
                        try db.cachedStatement(sql: "DELETE FROM timers WHERE run_id = ? AND key = ?")
                            .execute(arguments: [change.runId, change.key])
                    }
                }
                for task in batch.outbox {
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO outbox (attempt_key, task, created_at) VALUES (?, ?, ?)")
                        .execute(arguments: [task.attemptKey, try encoder.encode(task), Date().timeIntervalSince1970])
                }
                for key in batch.deletedOutbox {
                    try db.cachedStatement(sql: "DELETE FROM outbox WHERE attempt_key = ?").execute(arguments: [key])
                }
                for entry in batch.deadLetters {
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO dead_letter_outbox (id, entry, created_at) VALUES (?, ?, ?)")
                        .execute(arguments: [entry.id, try encoder.encode(entry), Date().timeIntervalSince1970])
                }
                for id in batch.deletedDeadLetters {
                    try db.cachedStatement(sql: "DELETE FROM dead_letter_outbox WHERE id = ?").execute(arguments: [id])
                }
                for breaker in batch.circuitBreakers {
                    try db.cachedStatement(sql: """
                        INSERT INTO circuit_breakers (provider, snapshot, updated_at) VALUES (?, ?, ?)
                        ON CONFLICT(provider) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at
                        """).execute(arguments: [
                            breaker.provider, try encoder.encode(breaker), Date().timeIntervalSince1970,
                        ])
                }
            }
        }
    }

    // MARK: Reading

    public func run(runId: String) throws -> RunRecord? {
        try wrap("read run") {
            try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE run_id = ?", arguments: [runId]).map(Self.run) }
        }
    }

    public func latestRun(workflowId: String) throws -> RunRecord? {
        try wrap("read run") {
            try pool.read { db in
                try Row.fetchOne(
                    db, sql: "SELECT * FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    arguments: [workflowId]
                ).map(Self.run)
            }
        }
    }

    public func run(requestId: String) throws -> RunRecord? {
        try wrap("read run") {
            try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE request_id = ?", arguments: [requestId]).map(Self.run)
            }
        }
    }

    public func runs(status: RunStatus?, limit: Int) throws -> [RunRecord] {
        try wrap("list runs") {
            try pool.read { db in
                if let status {
                    return try Row.fetchAll(
                        db, sql: "SELECT * FROM runs WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                        arguments: [status.rawValue, limit]
                    ).map(Self.run)
                }
                return try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", arguments: [limit])
                    .map(Self.run)
            }
        }
    }

    /// The runs `query` selects, each with its cost ratio when it is a cost outlier. Medians
    /// come from the costs of the 10,000 most recent runs with a cost (two columns read, not
    /// whole records), so a filtered page still compares against its whole workflow type.
    public func runs(_ query: RunQuery) throws -> [ListedRun] {
        try wrap("list runs") {
            try pool.read { db in
                var conditions: [String] = []
                var arguments: StatementArguments = []
                switch query.status {
                case .status(let status)?:
                    conditions.append("status = ?")
                    arguments += [status.rawValue]
                case .stalled?:
                    conditions.append("run_id IN (SELECT run_id FROM stalled_runs)")
                case .parked?:
                    conditions.append(
                        "run_id IN (SELECT run_id FROM activities WHERE json_extract(CAST(record AS TEXT), '$.state') = 'parked')")
                case nil: break
                }
                if let type = query.workflowType {
                    conditions.append("workflow_type = ?")
                    arguments += [type]
                }
                if let search = query.search, !search.isEmpty {
                    conditions.append("instr(workflow_id, ?) > 0")
                    arguments += [search]
                }
                if let minimum = query.minCostUSD {
                    conditions.append("cost_usd >= ?")
                    arguments += [minimum]
                }
                let samples = try Row.fetchAll(
                    db, sql: "SELECT workflow_type, cost_usd FROM runs WHERE cost_usd > 0 ORDER BY created_at DESC LIMIT 10000"
                ).map { (type: $0[0] as String, cost: $0[1] as Double) }
                let medians = CostOutliers.medians(samples)
                if query.costOutliersOnly { conditions.append("cost_usd > 0") }
                let order = query.order == .cost ? "cost_usd DESC, created_at DESC" : "created_at DESC, rowid DESC"
                let sql = "SELECT * FROM runs" + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
                    + " ORDER BY \(order)"
                var listed: [ListedRun] = []
                let cursor = try Row.fetchCursor(db, sql: sql, arguments: arguments)
                while listed.count < query.limit, let row = try cursor.next() {
                    let run = try Self.run(row)
                    let ratio = CostOutliers.ratio(of: run, medians: medians)
                    if query.costOutliersOnly && ratio == nil { continue }
                    listed.append(ListedRun(run: run, costRatio: ratio))
                }
                return listed
            }
        }
    }

    /// The run ids of `workflowId`, newest first.
    public func runIds(workflowId: String) throws -> [String] {
        try wrap("list runs") {
            try pool.read { db in
                try String.fetchAll(
                    db, sql: "SELECT run_id FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, rowid DESC", arguments: [workflowId])
            }
        }
    }

    /// The workflow types that have runs, for filters.
    public func workflowTypes() throws -> [String] {
        try wrap("list workflow types") {
            try pool.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT workflow_type FROM runs ORDER BY workflow_type") }
        }
    }

    /// How many runs have `status`.
    public func count(status: RunStatus) throws -> Int {
        try wrap("count runs") {
            try pool.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE status = ?", arguments: [status.rawValue]) ?? 0
            }
        }
    }

    /// Run id and `ref` of events of `kind` recorded in `[from, to)`, oldest first, for
    /// benchmarks and audits across runs.
    public func eventRefs(kind: EventKind, from: Date = .distantPast, to: Date = .distantFuture, limit: Int = .max) throws -> [(runId: String, ref: Int64)] {
        try wrap("read events") {
            try pool.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT run_id, ref FROM events WHERE kind = ? AND time >= ? AND time < ? ORDER BY time LIMIT ?
                    """, arguments: [kind.rawValue, from.timeIntervalSince1970, to.timeIntervalSince1970, limit]
                ).map { ($0[0], $0[1] ?? 0) }
            }
        }
    }

    public func openRuns() throws -> [RunRecord] {
        try wrap("list open runs") {
            try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM runs WHERE status IN ('running', 'blocked') ORDER BY created_at")
                    .map(Self.run)
            }
        }
    }

    public func events(runId: String) throws -> [HistoryEvent] {
        try wrap("read history") {
            try pool.read { db in
                try Self.events(db, sql: """
                    SELECT id, time, kind, ref, name, attempt, payload, failure, attributes, run_id
                    FROM events WHERE run_id = ? ORDER BY id
                    """, arguments: [runId])[runId] ?? []
            }
        }
    }

    public func openRunState() throws -> (events: [String: [HistoryEvent]], activities: [String: [ActivityRecord]]) {
        try wrap("read open runs") {
            try pool.read { db in
                let open = "SELECT run_id FROM runs WHERE status IN ('running', 'blocked')"
                let events = try Self.events(db, sql: """
                    SELECT id, time, kind, ref, name, attempt, payload, failure, attributes, run_id
                    FROM events WHERE run_id IN (\(open)) ORDER BY run_id, id
                    """)
                let decoder = JSONDecoder()
                var activities: [String: [ActivityRecord]] = [:]
                let rows = try Row.fetchCursor(
                    db, sql: "SELECT run_id, record FROM activities WHERE run_id IN (\(open)) ORDER BY run_id, activity_id")
                while let row = try rows.next() {
                    activities[row[0], default: []].append(try decoder.decode(ActivityRecord.self, from: row[1] as Data))
                }
                return (events, activities)
            }
        }
    }

    /// Events from `sql` (columns: id, time, kind, ref, name, attempt, payload, failure,
    /// attributes, run_id), by run, in the order the query gives.
    private static func events(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [String: [HistoryEvent]] {
        let decoder = JSONDecoder()
        var events: [String: [HistoryEvent]] = [:]
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let runId: String = row[9]
            let kindName: String = row[2]
            guard let kind = EventKind(rawValue: kindName) else {
                throw StoreError(message: "run \(runId) event \(row[0] as Int64) has unknown kind '\(kindName)'")
            }
            let failureText: String? = row[7]
            events[runId, default: []].append(HistoryEvent(
                id: row[0], time: Date(timeIntervalSince1970: row[1]), kind: kind, ref: row[3],
                name: row[4], attempt: row[5], payload: (row[6] as Data?).map(Payload.init(data:)),
                failure: try failureText.map { try decoder.decode(Failure.self, from: Data($0.utf8)) },
                attributes: (row[8] as Data?).map(Payload.init(data:))))
        }
        return events
    }

    public func activities(runId: String) throws -> [ActivityRecord] {
        try wrap("read activities") {
            try pool.read { db in
                let decoder = JSONDecoder()
                return try Data.fetchAll(
                    db, sql: "SELECT record FROM activities WHERE run_id = ? ORDER BY activity_id", arguments: [runId]
                ).map { try decoder.decode(ActivityRecord.self, from: $0) }
            }
        }
    }

    public func dueTimers(at time: Date, limit: Int) throws -> [TimerRecord] {
        try wrap("read timers") {
            try pool.read { db in
                try Row.fetchAll(
                    db, sql: """
                        SELECT run_id, kind, seq, fire_at, attempt FROM timers
                        WHERE fire_at <= ? AND run_id NOT IN (SELECT run_id FROM runs WHERE status = 'blocked')
                        ORDER BY fire_at LIMIT ?
                        """,
                    arguments: [time.timeIntervalSince1970, limit]
                ).map { row in
                    TimerRecord(
                        runId: row[0], kind: TimerRecord.Kind(rawValue: row[1]) ?? .workflowTimer, seq: row[2],
                        fireAt: Date(timeIntervalSince1970: row[3]), attempt: row[4])
                }
            }
        }
    }

    public func nextTimerDeadline() throws -> Date? {
        try wrap("read timers") {
            try pool.read { db in
                try Double.fetchOne(db, sql: """
                    SELECT MIN(fire_at) FROM timers
                    WHERE run_id NOT IN (SELECT run_id FROM runs WHERE status = 'blocked')
                    """).map(Date.init(timeIntervalSince1970:))
            }
        }
    }

    public func outbox(skipping: Set<String> = []) throws -> [ActivityTask] {
        try wrap("read outbox") {
            try pool.read { db in
                let decoder = JSONDecoder()
                // A cursor's row reads a column only when asked: skipped tasks are not even copied.
                let rows = try Row.fetchCursor(db, sql: "SELECT attempt_key, task FROM outbox ORDER BY created_at")
                return try Array(rows.filter { !skipping.contains($0[0]) }.map { try decoder.decode(ActivityTask.self, from: $0[1]) })
            }
        }
    }

    public func replaceStalledRuns(_ runs: [StalledRun]) throws {
        let encoder = JSONEncoder()
        try wrap("record stalled runs") {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM stalled_runs")
                for run in runs {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO stalled_runs (run_id, record) VALUES (?, ?)",
                        arguments: [run.runId, try encoder.encode(run)])
                }
            }
        }
    }

    public func stalledRuns() throws -> [StalledRun] {
        try wrap("read stalled runs") {
            try pool.read { db in
                let decoder = JSONDecoder()
                return try Data.fetchAll(db, sql: "SELECT record FROM stalled_runs")
                    .map { try decoder.decode(StalledRun.self, from: $0) }
                    .sorted { $0.since < $1.since }
            }
        }
    }

    /// The run's entry in the coordinator's last stall check, if it was stalled.
    public func stalledRun(runId: String) throws -> StalledRun? {
        try wrap("read stalled runs") {
            try pool.read { db in
                try Data.fetchOne(db, sql: "SELECT record FROM stalled_runs WHERE run_id = ?", arguments: [runId])
                    .map { try JSONDecoder().decode(StalledRun.self, from: $0) }
            }
        }
    }

    public func circuitBreakers() throws -> [CircuitBreakerSnapshot] {
        try wrap("read circuit breakers") {
            try pool.read { db in
                let decoder = JSONDecoder()
                return try Data.fetchAll(db, sql: "SELECT snapshot FROM circuit_breakers ORDER BY provider")
                    .map { try decoder.decode(CircuitBreakerSnapshot.self, from: $0) }
            }
        }
    }

    public func deadLetterOutbox(skipping: Set<String> = []) throws -> [DeadLetterEntry] {
        try wrap("read dead-letter outbox") {
            try pool.read { db in
                let decoder = JSONDecoder()
                let rows = try Row.fetchCursor(db, sql: "SELECT id, entry FROM dead_letter_outbox ORDER BY created_at")
                return try Array(rows.filter { !skipping.contains($0[0]) }.map { try decoder.decode(DeadLetterEntry.self, from: $0[1]) })
            }
        }
    }

    // MARK: Helpers

    private static func run(_ row: Row) throws -> RunRecord {
        let decoder = JSONDecoder()
        let failureText: String? = row["failure"]
        let optionsText: String = row["options"]
        var run = RunRecord(
            workflowId: row["workflow_id"], runId: row["run_id"], workflowType: row["workflow_type"],
            status: RunStatus(rawValue: row["status"]) ?? .failed, input: Payload(data: row["input"]),
            requestId: row["request_id"], parentRunId: row["parent_run_id"], parentSeq: row["parent_seq"],
            continuedFromRunId: row["continued_from_run_id"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            randomSeed: UInt64(bitPattern: row["random_seed"]),
            options: try decoder.decode(WorkflowOptions.self, from: Data(optionsText.utf8)),
            executionDeadline: (row["execution_deadline"] as Double?).map(Date.init(timeIntervalSince1970:)))
        run.result = (row["result"] as Data?).map(Payload.init(data:))
        run.failure = try failureText.map { try decoder.decode(Failure.self, from: Data($0.utf8)) }
        run.updatedAt = Date(timeIntervalSince1970: row["updated_at"])
        run.closedAt = (row["closed_at"] as Double?).map(Date.init(timeIntervalSince1970:))
        run.historyLength = row["history_length"]
        run.inputTokens = row["input_tokens"]
        run.outputTokens = row["output_tokens"]
        run.costUSD = row["cost_usd"]
        return run
    }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError(message: "history database \(path): \(what) failed: \(error.message ?? "\(error)") (SQLite code \(error.resultCode.rawValue))")
        } catch {
            throw StoreError(message: "history database \(path): \(what) failed: \(error)")
        }
    }
}

/// The history database failed.
public struct StoreError: KeelError {
    public var message: String
    public var errorType: String { "StoreError" }
}

extension HistoryStore {
    /// The latest run of `workflowId` (or the run `runId`) as a portable history document.
    public func export(workflowId: String, runId: String? = nil) throws -> HistoryExport {
        let record: RunRecord?
        if let runId { record = try run(runId: runId) } else { record = try latestRun(workflowId: workflowId) }
        guard let record else {
            throw StoreError(message: "no run of workflow \(workflowId)\(runId.map { " with run id \($0)" } ?? "") in this database")
        }
        return HistoryExport(
            workflowId: record.workflowId, runId: record.runId, workflowType: record.workflowType,
            randomSeed: record.randomSeed, startTime: record.createdAt, events: try events(runId: record.runId))
    }
}
