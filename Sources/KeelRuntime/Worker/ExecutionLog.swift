import Foundation
import KeelCore

/// One line per activity execution, appended atomically (O_APPEND) so many processes can share a file.
public enum ExecutionLog {
    public struct Entry: Sendable, Hashable {
        public var time: Date
        public var workflowId: String
        public var runId: String
        public var activityId: Int64
        public var attempt: Int
        public var worker: String
    }

    static func append(_ task: ActivityTask, worker: String, to path: String) {
        let line =
            String(format: "%.6f", Date().timeIntervalSince1970)
            + " \(task.workflowId) \(task.runId) \(task.activityId) \(task.attempt) \(worker)\n"
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        _ = line.withCString { write(descriptor, $0, strlen($0)) }
    }

    public static func read(_ path: String) -> [Entry] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 6, let time = Double(fields[0]), let activity = Int64(fields[3]), let attempt = Int(fields[4])
            else { return nil }
            return Entry(
                time: Date(timeIntervalSince1970: time), workflowId: String(fields[1]), runId: String(fields[2]),
                activityId: activity, attempt: attempt, worker: String(fields[5]))
        }
    }
}
