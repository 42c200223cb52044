import KeelCore

/// A start named a workflow id that policy does not allow to start again.
public struct WorkflowAlreadyStartedError: KeelError {
    public var workflowId: String
    public var runId: String
    public var status: RunStatus
    public var policy: String
    public var errorType: String { "WorkflowAlreadyStarted" }
    public var isNonRetryable: Bool { true }
    public var message: String {
        "workflow \(workflowId) already has run \(runId) (\(status.rawValue)) and \(policy) forbids another"
    }
}

/// No run with that workflow id exists, or none is open.
public struct WorkflowNotFoundError: KeelError {
    public var workflowId: String
    public var detail: String
    public init(workflowId: String, detail: String) {
        self.workflowId = workflowId
        self.detail = detail
    }
    public var errorType: String { "WorkflowNotFound" }
    public var isNonRetryable: Bool { true }
    public var message: String { "workflow \(workflowId): \(detail)" }
}

/// A redrive or discard named an activity that is not parked.
public struct ActivityNotParkedError: KeelError {
    public var message: String
    public var errorType: String { "ActivityNotParked" }
    public var isNonRetryable: Bool { true }
}

/// An unblock named a run that is not blocked, or one whose history still does not replay.
public struct NotBlockedError: KeelError {
    public var message: String
    public var errorType: String { "NotBlocked" }
    public var isNonRetryable: Bool { true }
}

/// A job its sender may not send (only operators cancel, terminate, redrive, discard, unblock
/// and manage schedules, when the coordinator names them).
public struct JobRefusedError: KeelError {
    public var message: String
    public var errorType: String { "NotAnOperator" }
}
