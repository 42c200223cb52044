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
        /// The options of the last activity it scheduled, as its event recorded them: a run
        /// whose steps share their options encodes them once (they were 3 % of the
        /// coordinator's CPU in `bench throughput`).
        private var lastOptions: (options: ActivityOptions, encoded: Payload?)?

        init(record: RunRecord) { self.record = record }
        var runId: String { record.runId }

        /// `options` as an activity-scheduled event's attributes.
        func encoded(_ options: ActivityOptions) -> Payload? {
            if let lastOptions, lastOptions.options == options { return lastOptions.encoded }
            let encoded = Command.encodedAttributes(of: options)
            lastOptions = (options, encoded)
            return encoded
        }
    }
}
