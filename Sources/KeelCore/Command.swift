import Foundation

/// What workflow code asks the engine to do. Each command becomes one history event.
public enum Command: Sendable, Equatable {
    case scheduleActivity(seq: Int64, type: String, input: Payload, options: ActivityOptions)
    case cancelActivity(seq: Int64)
    case startTimer(seq: Int64, seconds: Double)
    case cancelTimer(seq: Int64)
    case recordMarker(seq: Int64, name: String, value: Payload?)
    case startChildWorkflow(seq: Int64, type: String, workflowId: String, input: Payload, options: WorkflowOptions)
    case completeWorkflow(result: Payload)
    case failWorkflow(failure: Failure)
    case cancelWorkflow
    case continueAsNew(input: Payload)

    /// The event kind this command is recorded as.
    public var eventKind: EventKind {
        switch self {
        case .scheduleActivity: .activityScheduled
        case .cancelActivity: .activityCancelRequested
        case .startTimer: .timerStarted
        case .cancelTimer: .timerCancelled
        case .recordMarker: .markerRecorded
        case .startChildWorkflow: .childWorkflowStarted
        case .completeWorkflow: .workflowCompleted
        case .failWorkflow: .workflowFailed
        case .cancelWorkflow: .workflowCancelled
        case .continueAsNew: .workflowContinuedAsNew
        }
    }

    /// The command sequence number, for commands that have one.
    public var seq: Int64? {
        switch self {
        case .scheduleActivity(let seq, _, _, _), .cancelActivity(let seq), .startTimer(let seq, _),
            .cancelTimer(let seq), .recordMarker(let seq, _, _), .startChildWorkflow(let seq, _, _, _, _):
            return seq
        default:
            return nil
        }
    }

    /// The name recorded with the command (activity type, marker name, child type).
    public var name: String? {
        switch self {
        case .scheduleActivity(_, let type, _, _): type
        case .recordMarker(_, let name, _): name
        case .startChildWorkflow(_, let type, _, _, _): type
        default: nil
        }
    }

    /// Whether `event` records this command: same kind, sequence number and name.
    /// Inputs and options may legitimately change between code versions and are not compared.
    public func matches(_ event: HistoryEvent) -> Bool {
        event.kind == eventKind && event.ref == seq && event.name == name
    }

    public var summary: String {
        var parts = [eventKind.rawValue]
        if let seq { parts.append("seq=\(seq)") }
        if let name { parts.append(name) }
        return parts.joined(separator: " ")
    }

    /// An activity's options as its scheduled event's attributes.
    public static func encodedAttributes(of options: ActivityOptions) -> Payload? {
        try? Payload(encoding: options, field: "activity options", limit: .max)
    }

    /// The history event that records this command. `encodedOptions`: an activity's options
    /// as ``encodedAttributes(of:)`` gives them, when the caller has them already.
    public func event(id: Int64, time: Date, encodedOptions: Payload? = nil) -> HistoryEvent {
        var event = HistoryEvent(id: id, time: time, kind: eventKind, ref: seq, name: name)
        switch self {
        case .scheduleActivity(_, _, let input, let options):
            event.payload = input
            event.attributes = encodedOptions ?? Self.encodedAttributes(of: options)
        case .startTimer(_, let seconds):
            event.attributes = try? Payload(
                encoding: TimerAttributes(seconds: seconds, fireAt: time.addingTimeInterval(seconds)),
                field: "timer", limit: .max)
        case .recordMarker(_, _, let value):
            event.payload = value
        case .startChildWorkflow(_, _, let workflowId, let input, let options):
            event.payload = input
            event.attributes = try? Payload(
                encoding: ChildWorkflowAttributes(workflowId: workflowId, options: options),
                field: "child workflow", limit: .max)
        case .completeWorkflow(let result):
            event.payload = result
        case .failWorkflow(let failure):
            event.failure = failure
        case .continueAsNew(let input):
            event.payload = input
        case .cancelActivity, .cancelTimer, .cancelWorkflow:
            break
        }
        return event
    }
}

/// Workflow code issued a different command than its history records at the same position.
///
/// The run stops (its history is left as it is); deploying code that matches the history, or
/// guarding the change with `context.patched(_:)`, lets it continue.
public struct NonDeterminismError: KeelError, Equatable {
    public var workflowId: String
    public var runId: String
    /// The history event that did not match, if there was one.
    public var eventId: Int64?
    /// What history records at that position.
    public var recorded: String
    /// What the code issued now.
    public var issued: String
    public var errorType: String { "NonDeterminism" }
    public var message: String {
        let at = eventId.map { "history event #\($0)" } ?? "the end of history"
        return "workflow \(workflowId) run \(runId) diverged from its history at \(at): "
            + "history records \(recorded), the code issued \(issued). "
            + "Restore the previous code path or guard the change with context.patched(\"change-id\")."
    }
}
