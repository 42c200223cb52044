import Foundation

// Written by hand for the messages and outbox rows of every step: through Foundation's
// `JSONEncoder` each task cost the coordinator a few microseconds more, twice (a tenth of its
// CPU went to encoding in `bench throughput`).
extension ActivityTask {
    /// Writes the task as its synthesized `Encodable` conformance does with sorted keys: its wire
    /// body (docs/protocol.md), and with `JSONWriter.Dates.sinceReferenceDate` its outbox row.
    package func write(to writer: inout JSONWriter) throws {
        try writer.object { json in
            json.member("activityId", activityId)
            json.member("activityType", activityType)
            json.member("attempt", attempt)
            try json.member("attemptScheduledAt", attemptScheduledAt)
            json.member("claimBeforeRunning", claimBeforeRunning)
            json.member("coordinatorEpoch", coordinatorEpoch)
            try json.member("heartbeatDetails", heartbeatDetails)
            try json.member("heartbeatTimeout", heartbeatTimeout)
            try json.member("input", input)
            json.member("providers", providers)
            json.member("republished", republished)
            json.member("runId", runId)
            try json.member("scheduleToCloseTimeout", scheduleToCloseTimeout)
            try json.member("scheduleToStartTimeout", scheduleToStartTimeout)
            try json.member("scheduledAt", scheduledAt)
            try json.member("startToCloseTimeout", startToCloseTimeout)
            json.member("taskQueue", taskQueue)
            json.member("trace", trace)
            json.member("workflowId", workflowId)
            json.member("workflowType", workflowType)
        }
    }
}
