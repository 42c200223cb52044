import Foundation
import Testing

/// Polls `condition` every 50 ms; records an issue if it is not met within `seconds`.
func waitUntil(within seconds: Double = 20, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try !condition() {
        guard Date() < deadline else {
            Issue.record("condition not met within \(Int(seconds)) s")
            return
        }
        try await Task.sleep(for: .milliseconds(50))
    }
}
