import Foundation
import Keel
import KeelTestKit
import Testing

/// A history database that fails says so with SQLite's result code as data.
@Suite("History store errors", .tags(.unit))
struct StoreErrorTests {
    @Test func aFileThatIsNotADatabaseIsRefusedWithSQLitesCode() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("not-a-database.sqlite").path
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteHistoryStore(path: path) }
        #expect(error?.primaryResultCode == 26, "SQLITE_NOTADB: \(error?.message ?? "")")
        #expect(error?.message.contains(path) == true)
    }
}

@Suite("Opening a new history from two processes at once", .tags(.unit))
struct ConcurrentOpenTests {
    @Test func twoOpenersOfANewFileBothGetTheSchema() async throws {
        for round in 0..<20 {
            let path = makeTemporaryDirectory("keel-open").appendingPathComponent("keel.sqlite").path
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await offPool {
                            _ = try SQLiteHistoryStore(path: path)
                            return true
                        }
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results == [true, true, true], "round \(round)")
        }
    }
}
