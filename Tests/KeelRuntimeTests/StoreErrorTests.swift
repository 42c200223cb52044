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
