import Foundation
import GRDB
import KeelCore

// What the coordinator reads: runs, histories, activities, due timers, the outboxes, breakers.
extension SQLiteHistoryStore {
    public func run(runId: String) throws -> RunRecord? {
        try wrap("read run") {
            try pool.read { db in
                try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM runs WHERE run_id = ?"), arguments: [runId]).map(Self.run)
            }
        }
    }

    public func latestRun(workflowId: String) throws -> RunRecord? {
        try wrap("read run") { try pool.read { db in try Self.latestRun(workflowId: workflowId, in: db) } }
    }

    public func startLookups(requestIds: [String], workflowIds: [String]) throws -> StartLookups {
        guard !requestIds.isEmpty || !workflowIds.isEmpty else { return StartLookups() }
        return try wrap("read runs") {
            try pool.read { db in
                var lookups = StartLookups()
                // A batch may name an id more than once: each is read once.
                for requestId in Set(requestIds) {
                    lookups.runsByRequestId[requestId] = try Self.run(requestId: requestId, in: db)
                }
                for workflowId in Set(workflowIds) {
                    lookups.latestRunsByWorkflowId[workflowId] = try Self.latestRun(workflowId: workflowId, in: db)
                }
                return lookups
            }
        }
    }

    private static func latestRun(workflowId: String, in db: Database) throws -> RunRecord? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1"),
            arguments: [workflowId]
        ).map(run)
    }

    private static func run(requestId: String, in db: Database) throws -> RunRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM runs WHERE request_id = ?"), arguments: [requestId]).map(run)
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
                try Self.events(
                    db,
                    sql: """
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
                let events = try Self.events(
                    db,
                    sql: """
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
    static func events(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [String: [HistoryEvent]] {
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
            events[runId, default: []].append(
                HistoryEvent(
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
                    db,
                    sql: """
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
                try Double.fetchOne(
                    db,
                    sql: """
                        SELECT MIN(fire_at) FROM timers
                        WHERE run_id NOT IN (SELECT run_id FROM runs WHERE status = 'blocked')
                        """
                ).map(Date.init(timeIntervalSince1970:))
            }
        }
    }

    public func outbox(skipping: Set<String> = []) throws -> [ActivityTask] {
        try wrap("read outbox") {
            try pool.read { db in
                let decoder = JSONDecoder()
                // A cursor's row reads a column only when asked: skipped tasks are not even copied.
                let rows = try Row.fetchCursor(db, sql: "SELECT attempt_key, task FROM outbox ORDER BY created_at")
                return try Array(
                    rows.filter { !skipping.contains($0[0]) }.map { try decoder.decode(ActivityTask.self, from: $0[1]) })
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

    public func schedules() throws -> [ScheduleRecord] {
        try wrap("read schedules") {
            try pool.read { db in
                let decoder = JSONDecoder()
                return try Data.fetchAll(db, sql: "SELECT record FROM schedules ORDER BY name")
                    .map { try decoder.decode(ScheduleRecord.self, from: $0) }
            }
        }
    }

    public func providerCapacity() throws -> [ProviderCapacitySnapshot] {
        try wrap("read provider capacity") {
            try pool.read { db in
                let decoder = JSONDecoder()
                return try Data.fetchAll(db, sql: "SELECT snapshot FROM provider_capacity ORDER BY provider")
                    .map { try decoder.decode(ProviderCapacitySnapshot.self, from: $0) }
            }
        }
    }

    public func deadLetterOutbox(skipping: Set<String> = []) throws -> [DeadLetterEntry] {
        try wrap("read dead-letter outbox") {
            try pool.read { db in
                let decoder = JSONDecoder()
                let rows = try Row.fetchCursor(db, sql: "SELECT id, entry FROM dead_letter_outbox ORDER BY created_at")
                return try Array(
                    rows.filter { !skipping.contains($0[0]) }.map { try decoder.decode(DeadLetterEntry.self, from: $0[1]) })
            }
        }
    }
}
