import Foundation
import KeelCore

/// A request to start a workflow run.
public struct StartRequest: Codable, Sendable, Hashable {
    public var workflowType: String
    public var workflowId: String
    public var input: Payload
    public var options: WorkflowOptions
    /// Makes the start itself idempotent: a second start with the same request id returns the
    /// run the first one made, whatever the policies say.
    public var requestId: String?

    public init(
        workflowType: String, workflowId: String, input: Payload, options: WorkflowOptions = .init(),
        requestId: String? = nil
    ) {
        self.workflowType = workflowType
        self.workflowId = workflowId
        self.input = input
        self.options = options
        self.requestId = requestId
    }

    /// A typed start.
    public init<W: Workflow>(
        _ workflow: W.Type, id: String, input: W.Input, options: WorkflowOptions = .init(),
        requestId: String? = nil
    ) throws {
        self.init(
            workflowType: W.name, workflowId: id,
            input: try Payload(encoding: input, field: "input of workflow \(W.name)"), options: options,
            requestId: requestId)
    }
}

/// The run a start resolved to.
public struct StartResult: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    /// False when an existing run was returned (useExisting, or a repeated request id).
    public var started: Bool
}
