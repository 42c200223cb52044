import Foundation
import KeelCore
import Logging
import Tracing

// An open run as the coordinator holds it in memory.
extension Coordinator {
    /// An open run held in memory.
    final class LiveRun {
        var record: RunRecord
        var instance: WorkflowInstance?
        var activities: [Int64: ActivityRecord] = [:]
        var nextEventId: Int64 = 1
        /// The run's span while it is live here, and the headers that carry it to workers.
        var span: (any Span)?
        var traceHeaders: [String: String]?
        /// Its open child runs, for their parent-close policy.
        var children: Set<String> = []

        init(record: RunRecord) { self.record = record }
        var runId: String { record.runId }
    }
}
