import Foundation

/// The kinds of events a workflow run's history holds.
///
/// *Command* events record what the workflow code asked for; replay matches the commands the code
/// issues against them, in order. The other events are inputs that wake the workflow up
/// (a result, a timer, a signal) or bookkeeping of the engine (attempts, retries).
public enum EventKind: String, Codable, Sendable, CaseIterable {
    case workflowStarted
    case workflowCompleted
    case workflowFailed
    case workflowCancelled
    case workflowContinuedAsNew
    case workflowTimedOut
    case workflowTerminated
    case activityScheduled
    case activityStarted
    case activityCompleted
    case activityFailed
    case activityTimedOut
    case activityCancelRequested
    case activityParked
    case activityRedriven
    case timerStarted
    case timerFired
    case timerCancelled
    case signalReceived
    case cancelRequested
    case markerRecorded
    case childWorkflowStarted
    case childWorkflowCompleted
    case childWorkflowFailed

    /// Recorded because workflow code issued a command; replay must issue the same one.
    public var isCommand: Bool {
        switch self {
        case .workflowCompleted, .workflowFailed, .workflowCancelled, .workflowContinuedAsNew,
            .activityScheduled, .activityCancelRequested, .timerStarted, .timerCancelled,
            .markerRecorded, .childWorkflowStarted:
            return true
        default:
            return false
        }
    }

    /// Closes the run.
    public var isClosing: Bool {
        switch self {
        case .workflowCompleted, .workflowFailed, .workflowCancelled, .workflowContinuedAsNew,
            .workflowTimedOut, .workflowTerminated:
            return true
        default:
            return false
        }
    }
}

/// One entry of a run's history.
///
/// The fields are flat on purpose: replay reads `kind`, `ref` and `name` of every event and
/// decodes a payload only when workflow code asks for that value.
public struct HistoryEvent: Codable, Sendable, Hashable {
    /// Position in the run's history, from 1.
    public var id: Int64
    public var time: Date
    public var kind: EventKind
    /// The workflow command this event belongs to (its sequence number), when it belongs to one.
    public var ref: Int64?
    /// Activity or workflow type, signal name, marker name, or worker identity.
    public var name: String?
    /// Activity attempt number, from 1.
    public var attempt: Int?
    /// Input or result value.
    public var payload: Payload?
    public var failure: Failure?
    /// Kind-specific attributes (activity options, timer duration, child workflow id), as JSON.
    public var attributes: Payload?

    public init(
        id: Int64, time: Date, kind: EventKind, ref: Int64? = nil, name: String? = nil,
        attempt: Int? = nil, payload: Payload? = nil, failure: Failure? = nil,
        attributes: Payload? = nil
    ) {
        self.id = id
        self.time = time
        self.kind = kind
        self.ref = ref
        self.name = name
        self.attempt = attempt
        self.payload = payload
        self.failure = failure
        self.attributes = attributes
    }

    /// `name` of the `activityFailed` event that hands a parked activity's failure to the
    /// workflow on `keel dlq discard`.
    public static let discardedMark = "discarded"

    /// What an activity attempt reported, for the conventions that read it (`usage`, `tries`):
    /// the result of a completion, the failure details of a failed, timed-out or parked attempt.
    /// Nil for other events, and for the failure a discard hands over (it was read when the
    /// activity parked).
    public var attemptReport: Payload? {
        switch kind {
        case .activityCompleted: return payload
        case .activityFailed where name == HistoryEvent.discardedMark: return nil
        case .activityFailed, .activityTimedOut, .activityParked: return failure?.details
        default: return nil
        }
    }

    /// Whether this failure event ends its activity (rather than leading to another attempt).
    public var endsActivity: Bool {
        switch kind {
        case .activityCompleted: return true
        case .activityFailed, .activityTimedOut: return failure?.retryState != .willRetry
        default: return false
        }
    }

    /// A one-line human description, used in errors and timelines.
    public var summary: String {
        var parts = ["#\(id) \(kind.rawValue)"]
        if let ref { parts.append("seq=\(ref)") }
        if let name { parts.append(name) }
        if let attempt { parts.append("attempt=\(attempt)") }
        if let failure { parts.append("[\(failure)]") }
        return parts.joined(separator: " ")
    }
}

/// Attributes of `workflowStarted`.
public struct WorkflowStartedAttributes: Codable, Sendable, Hashable {
    public var workflowType: String
    public var workflowId: String
    public var randomSeed: UInt64
    public var options: WorkflowOptions
    public var parentWorkflowId: String?
    public var parentRunId: String?
    public var continuedFromRunId: String?
    /// What the runs this one continues (continue-as-new) had spent: the run starts with it, so
    /// its budget covers the whole chain.
    public var carriedSpend: Spend?

    public init(
        workflowType: String, workflowId: String, randomSeed: UInt64, options: WorkflowOptions,
        parentWorkflowId: String? = nil, parentRunId: String? = nil, continuedFromRunId: String? = nil,
        carriedSpend: Spend? = nil
    ) {
        self.workflowType = workflowType
        self.workflowId = workflowId
        self.randomSeed = randomSeed
        self.options = options
        self.parentWorkflowId = parentWorkflowId
        self.parentRunId = parentRunId
        self.continuedFromRunId = continuedFromRunId
        self.carriedSpend = carriedSpend
    }
}

/// Attributes of `timerStarted`.
public struct TimerAttributes: Codable, Sendable, Hashable {
    public var seconds: Double
    public var fireAt: Date
}

/// Attributes of `childWorkflowStarted`.
public struct ChildWorkflowAttributes: Codable, Sendable, Hashable {
    public var workflowId: String
    public var options: WorkflowOptions
}
