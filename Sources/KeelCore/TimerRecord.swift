import Foundation

/// A durable timer: workflow sleeps, retry backoff, and every timeout.
public struct TimerRecord: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable {
        case workflowTimer = "t"
        case retry
        case scheduleToStart = "sts"
        case startToClose = "stc"
        case heartbeat = "hb"
        case scheduleToClose = "s2c"
        case executionTimeout = "wft"
    }

    public var runId: String
    public var kind: Kind
    /// The command sequence number (timer or activity); 0 for run-level timers.
    public var seq: Int64
    public var fireAt: Date
    /// The attempt an attempt-level timeout belongs to; a stale one is ignored.
    public var attempt: Int?

    public init(runId: String, kind: Kind, seq: Int64, fireAt: Date, attempt: Int? = nil) {
        self.runId = runId
        self.kind = kind
        self.seq = seq
        self.fireAt = fireAt
        self.attempt = attempt
    }

    public var key: String { "\(kind.rawValue):\(seq)" }

    /// What the timer is for, as a person reads it: "timer #3", "retry of activity #2", ….
    public var description: String {
        switch kind {
        case .workflowTimer: "timer #\(seq)"
        case .retry: "retry of activity #\(seq)"
        case .scheduleToStart: "schedule-to-start timeout of activity #\(seq)"
        case .startToClose: "start-to-close timeout of activity #\(seq)"
        case .heartbeat: "heartbeat timeout of activity #\(seq)"
        case .scheduleToClose: "schedule-to-close timeout of activity #\(seq)"
        case .executionTimeout: "workflow execution timeout"
        }
    }
}
