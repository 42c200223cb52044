import CSQLiteWALBuffer
import Foundation
import GRDB
import KeelCore
import Synchronization

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

    let pool: DatabasePool
    public let path: String
    /// The epoch this store's coordinator took (``takeEpoch(holder:)``); every commit checks it
    /// is still the current one. nil: not fenced (tools, tests).
    let fence = Mutex<Int64?>(nil)
    /// Where each write transaction's changes go (``replicate(to:)``); nil: nowhere.
    let changeSink = Mutex<(any HistoryChangeSink)?>(nil)
    /// Set once checkpoints run on a thread of their own (``checkpointInBackground()``).
    let checkpointer = Mutex<WALCheckpointer?>(nil)
    /// The JSON of options the store wrote recently: a commit of one step encoded its run's and
    /// its activity's options each time (4 % of the coordinator's CPU in `bench latency`).
    let encodedWorkflowOptions = RecentEncodings<WorkflowOptions, String>()
    let encodedActivityOptions = RecentEncodings<ActivityOptions, Data>()

    public init(path: String, durability: Durability = .normal) throws {
        Self.gatherLogWrites
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
            // The writer keeps up to 64 MiB of the file's pages (SQLite's default: 2 MiB): every
            // step's commit walks the B-trees of thousands of open runs, and with the default
            // most of those pages were read again from the OS (pread: 6.5 % of the coordinator's
            // CPU in `bench throughput`). Readers keep the default.
            if !db.configuration.readonly { try db.execute(sql: "PRAGMA cache_size = -65536") }
        }
        do {
            pool = try Self.open(path: path, configuration: configuration)
        } catch {
            throw StoreError(
                message: "cannot open the history database at \(path): \(error)",
                resultCode: (error as? DatabaseError)?.extendedResultCode.rawValue)
        }
    }

    /// Once per process, before the first store opens: each commit's write-ahead log frames reach
    /// the file in one `pwrite`, not two per page (`CSQLiteWALBuffer`; 11 % of the coordinator's
    /// busiest thread in `bench latency`). `KEEL_SQLITE_WAL_BUFFER=off` keeps SQLite's own writes.
    /// Should the VFS not register, SQLite's own stays, and only the speed differs.
    static let gatherLogWrites: Void = {
        guard ProcessInfo.processInfo.environment["KEEL_SQLITE_WAL_BUFFER"] != "off" else { return }
        _ = keel_wal_buffer_install()
    }()

    deinit {
        guard let checkpointer = checkpointer.withLock({ $0 }) else { return }
        pool.writeWithoutTransaction { db in checkpointer.uninstall(from: db) }
        checkpointer.stop()
    }

    /// From now on the write-ahead log is copied into the file by a thread and a connection of
    /// their own (``WALCheckpointer``), not by the commit that fills it: the coordinator's
    /// commits no longer wait for `fdatasync`. Once per store; tools that open the file briefly
    /// keep SQLite's own checkpoints.
    public func checkpointInBackground() throws {
        try checkpointInBackground(backstopPages: WALCheckpointer.backstopPages)
    }

    func checkpointInBackground(backstopPages: Int) throws {
        try wrap("starting the checkpoint thread") {
            let started = try WALCheckpointer(path: path, backstopPages: backstopPages)
            pool.writeWithoutTransaction { db in started.install(on: db) }
            let previous = checkpointer.withLock { current in
                defer { current = started }
                return current
            }
            previous?.stop()
        }
    }

    static func run(_ row: Row) throws -> RunRecord {
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

    func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw StoreError(
                message:
                    "history database \(path): \(what) failed: \(error.message ?? "\(error)") (SQLite code \(error.extendedResultCode.rawValue))",
                resultCode: error.extendedResultCode.rawValue)
        } catch {
            throw StoreError(message: "history database \(path): \(what) failed: \(error)")
        }
    }
}
