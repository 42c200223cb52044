import Foundation

/// Identity of a workflow run, as its code sees it.
public struct WorkflowInfo: Sendable, Hashable, Codable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    public var parentWorkflowId: String?
    public var parentRunId: String?

    public init(
        workflowId: String, runId: String, workflowType: String,
        parentWorkflowId: String? = nil, parentRunId: String? = nil
    ) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.parentWorkflowId = parentWorkflowId
        self.parentRunId = parentRunId
    }
}
