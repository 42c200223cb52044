import Foundation
import GRDB
import GRDBSQLite

/// A cached write statement run with its values bound through SQLite's C API, for the rows
/// every step writes (runs, events, activities, outbox rows).
///
/// GRDB's `execute(arguments:)` first builds an array of `DatabaseValue`s, validates it and binds
/// it through nested closures: about 2.5 µs of CPU per execution on top of SQLite's own work
/// (an event's insert took 7.3–8.1 µs, 5.2–5.5 µs bound here, in thread CPU time during `bench
/// throughput`). ``run(_:)`` binds its values to the statement's parameters in order (nil binds
/// NULL), steps the statement once and resets it for the next row.
struct BoundStatement {
    private let statement: Statement
    private let db: Database

    /// `statement` must be one of `db`'s (`cachedStatement`), used within its current access.
    init(_ statement: Statement, in db: Database) {
        self.statement = statement
        self.db = db
    }

    /// Runs the statement with `values` for its parameters, and returns how many rows it changed.
    /// Passing fewer or more values than the statement has parameters is a programming error.
    @discardableResult
    func run<each Value: SQLiteBindable>(_ values: repeat each Value) throws -> Int {
        let sqlite = statement.sqliteStatement
        sqlite3_reset(sqlite)
        sqlite3_clear_bindings(sqlite)
        defer {
            // Nothing bound outlives the call (GRDB expects its statements unbound between uses).
            sqlite3_reset(sqlite)
            sqlite3_clear_bindings(sqlite)
        }
        var index: Int32 = 0
        for value in repeat each values {
            index += 1
            let code = value.bind(to: sqlite, at: index)
            guard code == SQLITE_OK else { throw failure(code) }
        }
        precondition(
            index == sqlite3_bind_parameter_count(sqlite),
            "\(index) values for the \(sqlite3_bind_parameter_count(sqlite)) parameters of \(statement.sql)")
        let code = sqlite3_step(sqlite)
        guard code == SQLITE_DONE else { throw failure(code) }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    private func failure(_ code: Int32) -> DatabaseError {
        DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
            sql: statement.sql)
    }
}

/// A value ``BoundStatement`` binds to a parameter; `bind` returns SQLite's result code.
protocol SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32
}

/// SQLite copies what is bound before the bind call returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

extension String: SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 {
        let length = UInt64(utf8.count)
        return withCString { text in sqlite3_bind_text64(statement, index, text, length, transient, UInt8(SQLITE_UTF8)) }
    }
}

extension Data: SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 {
        withUnsafeBytes { bytes in
            // An empty blob is bound as one, not as NULL: SQLite needs a non-null pointer for that.
            let start = bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)
            return sqlite3_bind_blob64(statement, index, start, UInt64(bytes.count), transient)
        }
    }
}

extension Int64: SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 { sqlite3_bind_int64(statement, index, self) }
}

extension Int: SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 { sqlite3_bind_int64(statement, index, Int64(self)) }
}

extension Double: SQLiteBindable {
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 { sqlite3_bind_double(statement, index, self) }
}

extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    /// Nil leaves the parameter NULL (the statement's bindings are cleared before each run).
    func bind(to statement: OpaquePointer, at index: Int32) -> Int32 {
        self?.bind(to: statement, at: index) ?? SQLITE_OK
    }
}
