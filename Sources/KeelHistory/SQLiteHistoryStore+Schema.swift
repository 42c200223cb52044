import Foundation
import GRDB
import KeelCore

// The schema: forward-only migrations, run at open.
extension SQLiteHistoryStore {
    /// Opens the pool and runs the migrations not applied yet. Processes opening a new file at
    /// once (a coordinator and `keel show`, a test and the coordinator it started) race: the
    /// switch to WAL may find the file locked, and a migration both saw pending fails for the one
    /// that comes second, with "already exists", "duplicate column name" or, for one that can
    /// run twice (v11 copies its tables), at the record of the migration (its transaction then
    /// rolls back). The loser
    /// tries again (reading the applied migrations anew), for up to two seconds.
    static func open(path: String, configuration: Configuration) throws -> DatabasePool {
        var tries = 0
        while true {
            do {
                let pool = try DatabasePool(path: path, configuration: configuration)
                try migrator.migrate(pool)
                return pool
            } catch let error as DatabaseError where tries < 40 && lostTheRace(error) {
                tries += 1
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    private static func lostTheRace(_ error: DatabaseError) -> Bool {
        error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
            || (error.resultCode == .SQLITE_ERROR
                && ["already exists", "duplicate column name"].contains { (error.message ?? "").contains($0) })
            || (error.resultCode == .SQLITE_CONSTRAINT && (error.message ?? "").contains("grdb_migrations"))
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
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
            try db.execute(
                sql: """
                    CREATE TABLE dead_letter_outbox (
                        id TEXT PRIMARY KEY NOT NULL,
                        entry BLOB NOT NULL,
                        created_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v3: circuit breakers") { db in
            try db.execute(
                sql: """
                    CREATE TABLE circuit_breakers (
                        provider TEXT PRIMARY KEY NOT NULL,
                        snapshot BLOB NOT NULL,
                        updated_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v4: stalled runs") { db in
            try db.execute(
                sql: """
                    CREATE TABLE stalled_runs (
                        run_id TEXT PRIMARY KEY NOT NULL,
                        record BLOB NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v5: provider capacity") { db in
            try db.execute(
                sql: """
                    CREATE TABLE provider_capacity (
                        provider TEXT PRIMARY KEY NOT NULL,
                        snapshot BLOB NOT NULL,
                        updated_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v6: schedules") { db in
            try db.execute(
                sql: """
                    CREATE TABLE schedules (
                        name TEXT PRIMARY KEY NOT NULL,
                        record BLOB NOT NULL,
                        updated_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v7: closed runs by time") { db in
            // For retention: the oldest closed runs first.
            try db.execute(sql: "CREATE INDEX runs_by_closed ON runs(closed_at) WHERE closed_at IS NOT NULL")
        }
        migrator.registerMigration("v8: coordinator epochs") { db in
            // Fencing: each coordinator that takes the history takes the next epoch, and commits
            // only while it is still the current one.
            try db.execute(
                sql: """
                    CREATE TABLE coordinator_epoch (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        epoch INTEGER NOT NULL,
                        holder TEXT NOT NULL,
                        taken_at REAL NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v9: replication position") { db in
            // The replicated history: `seq` counts the write transactions whose changes went to
            // the log (written by the active coordinator, inside each of them, so the followers'
            // files carry it too); `followed_offset` is the log's offset a follower applied last;
            // the outbox keeps each transaction's changes until the log confirmed them.
            try db.execute(
                sql: """
                    CREATE TABLE replication (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        seq INTEGER NOT NULL,
                        followed_offset INTEGER
                    );
                    INSERT INTO replication (id, seq) VALUES (1, 0);
                    CREATE TABLE replication_outbox (
                        seq INTEGER PRIMARY KEY NOT NULL,
                        epoch INTEGER,
                        changeset BLOB NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v10: restore point") { db in
            // Written by `keel backup` into its copy: tasks the copy holds as published and not
            // started may have run, and been answered to the original, after it was taken; the
            // first coordinator on the copy publishes them again (``restorePoint()``).
            try db.execute(
                sql: """
                    CREATE TABLE restore_point (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        taken_at REAL NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v11: activities and outbox in insertion order") { db in
            // Every step inserts and later deletes a row of each. Keyed by run id (random), each
            // row sat on a page of its own, and a commit wrote a 4 KB page per step to the WAL for
            // each table; in insertion order, a commit's rows share the last pages, and only the
            // small index pages are scattered. The log's changesets of these tables change shape
            // with them: log format 2 (``SQLiteHistoryStore/logFormat``); what the replication
            // outbox holds from before is format 1.
            try db.execute(
                sql: """
                    CREATE TABLE activities_v11 (
                        id INTEGER PRIMARY KEY,
                        run_id TEXT NOT NULL,
                        activity_id INTEGER NOT NULL,
                        record BLOB NOT NULL
                    );
                    INSERT INTO activities_v11 (run_id, activity_id, record)
                        SELECT run_id, activity_id, record FROM activities ORDER BY run_id, activity_id;
                    DROP TABLE activities;
                    ALTER TABLE activities_v11 RENAME TO activities;
                    CREATE UNIQUE INDEX activities_by_run ON activities(run_id, activity_id);
                    CREATE TABLE outbox_v11 (
                        id INTEGER PRIMARY KEY,
                        attempt_key TEXT NOT NULL,
                        task BLOB NOT NULL,
                        created_at REAL NOT NULL
                    );
                    INSERT INTO outbox_v11 (attempt_key, task, created_at)
                        SELECT attempt_key, task, created_at FROM outbox ORDER BY created_at, attempt_key;
                    DROP TABLE outbox;
                    ALTER TABLE outbox_v11 RENAME TO outbox;
                    CREATE UNIQUE INDEX outbox_by_attempt ON outbox(attempt_key);
                    ALTER TABLE replication_outbox ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
                    """)
        }
        return migrator
    }
}
