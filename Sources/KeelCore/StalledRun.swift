import Foundation

/// An open run that has made no progress for too long, and why.
public struct StalledRun: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    /// What it waits on, as a sentence naming the activity and the queue or worker.
    public var reason: String
    /// Since when nothing happened.
    public var since: Date

    public init(workflowId: String, runId: String, workflowType: String, reason: String, since: Date) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.reason = reason
        self.since = since
    }
}
