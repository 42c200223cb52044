import ArgumentParser
import Foundation
import Keel

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract:
            "Write a consistent copy of the history (SQLite VACUUM INTO), also while a coordinator runs; checks it with PRAGMA integrity_check."
    )
    @OptionGroup var database: DatabaseOptions
    @Option(help: "The copy's path; must not exist.") var out: String

    func run() async throws {
        let store = try database.openStore()
        let started = ContinuousClock.now
        do { try store.backup(to: out) } catch let error as StoreError { throw ValidationError(error.message) }
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        let seconds = (ContinuousClock.now - started).components
        print(
            "backed up \(database.path) to \(out): \(size) bytes in "
                + String(format: "%.2f", Double(seconds.seconds) + Double(seconds.attoseconds) / 1e18)
                + " s; integrity check ok")
    }
}
