import Foundation
import GRDB
import KeelCore

// What operators read: run listings with filters and cost, stalled runs, counts (the CLI, the console, the benches).
extension SQLiteHistoryStore {
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
                        "run_id IN (SELECT run_id FROM activities WHERE json_extract(CAST(record AS TEXT), '$.state') = 'parked')"
                    )
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
                let sql =
                    "SELECT * FROM runs" + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
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
                    db, sql: "SELECT run_id FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, rowid DESC",
                    arguments: [workflowId])
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
    public func eventRefs(
        kind: EventKind, from: Date = .distantPast, to: Date = .distantFuture, limit: Int = .max
    ) throws -> [(runId: String, ref: Int64)] {
        try wrap("read events") {
            try pool.read { db in
                try Row.fetchAll(
                    db,
                    sql: """
                        SELECT run_id, ref FROM events WHERE kind = ? AND time >= ? AND time < ? ORDER BY time LIMIT ?
                        """, arguments: [kind.rawValue, from.timeIntervalSince1970, to.timeIntervalSince1970, limit]
                ).map { ($0[0], $0[1] ?? 0) }
            }
        }
    }

    public func replaceStalledRuns(_ runs: [StalledRun]) throws {
        let encoder = JSONEncoder()
        try wrap("record stalled runs") {
            try write { db in
                try checkFence(db)
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
}
