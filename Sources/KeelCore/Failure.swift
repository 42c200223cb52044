import Foundation

/// Why an activity stopped being retried, or that it will be retried.
public enum RetryState: String, Codable, Sendable {
    /// Another attempt is scheduled.
    case willRetry
    /// The error type is non-retryable (by policy or because the error said so).
    case nonRetryableFailure
    /// `maximumAttempts` were used.
    case maximumAttemptsReached
    /// The schedule-to-close (or schedule-to-start) deadline would be passed.
    case timeout
    /// The workflow asked for the activity to be cancelled.
    case cancelRequested
}

/// Which timeout ended an attempt or an activity.
public enum TimeoutKind: String, Codable, Sendable {
    case scheduleToStart, startToClose, heartbeat, scheduleToClose
}

/// A failure as it is recorded in history and carried on the wire: the error's stable type name,
/// its message, and what the engine decided about it.
public struct Failure: Error, Codable, Sendable, Hashable, CustomStringConvertible {
    /// A stable error type name, matched exactly against `RetryPolicy.nonRetryableErrorTypes`.
    public var type: String
    public var message: String
    /// The error itself says it must not be retried, whatever the policy.
    public var nonRetryable: Bool
    /// A delay the error asks for before the next attempt (from `Retry-After`), in seconds.
    public var nextRetryDelay: Double?
    /// Optional structured details (JSON).
    public var details: Payload?
    /// Set on timeout failures.
    public var timeoutKind: TimeoutKind?
    /// Set when the engine has decided about this failure.
    public var retryState: RetryState?
    /// When the next attempt starts, set when `retryState` is `willRetry`.
    public var nextAttemptAt: Date?

    public init(
        type: String, message: String, nonRetryable: Bool = false, nextRetryDelay: Double? = nil,
        details: Payload? = nil, timeoutKind: TimeoutKind? = nil, retryState: RetryState? = nil,
        nextAttemptAt: Date? = nil
    ) {
        self.type = type
        self.message = message
        self.nonRetryable = nonRetryable
        self.nextRetryDelay = nextRetryDelay
        self.details = details
        self.timeoutKind = timeoutKind
        self.retryState = retryState
        self.nextAttemptAt = nextAttemptAt
    }

    /// Converts any error thrown by user code into a failure with a stable type name.
    public init(_ error: any Error) {
        switch error {
        case let failure as Failure:
            self = failure
        case let error as ApplicationError:
            self.init(
                type: error.type, message: error.message, nonRetryable: error.isNonRetryable,
                nextRetryDelay: error.nextRetryDelay.map(\.seconds), details: error.details)
        case let error as any KeelError:
            self.init(type: error.errorType, message: error.message, nonRetryable: error.isNonRetryable)
        default:
            self.init(type: String(describing: Swift.type(of: error)), message: String(describing: error))
        }
    }

    enum CodingKeys: String, CodingKey {
        case type, message, nonRetryable, nextRetryDelay, details, timeoutKind, retryState, nextAttemptAt
    }

    // Only `type` and `message` are required, so workers in other languages report failures simply.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            type: try container.decode(String.self, forKey: .type),
            message: try container.decodeIfPresent(String.self, forKey: .message) ?? "",
            nonRetryable: try container.decodeIfPresent(Bool.self, forKey: .nonRetryable) ?? false,
            nextRetryDelay: try container.decodeIfPresent(Double.self, forKey: .nextRetryDelay),
            details: try container.decodeIfPresent(Payload.self, forKey: .details),
            timeoutKind: try container.decodeIfPresent(TimeoutKind.self, forKey: .timeoutKind),
            retryState: try container.decodeIfPresent(RetryState.self, forKey: .retryState),
            nextAttemptAt: try container.decodeIfPresent(Date.self, forKey: .nextAttemptAt))
    }

    public static func timeout(_ kind: TimeoutKind) -> Failure {
        Failure(type: "Timeout", message: "activity \(kind.rawValue) timeout", timeoutKind: kind)
    }

    public var description: String { "\(type): \(message)" }
}

/// Errors of Keel's own with a stable type name that history records.
public protocol KeelError: Error, CustomStringConvertible, Sendable {
    var errorType: String { get }
    var message: String { get }
    var isNonRetryable: Bool { get }
}

extension KeelError {
    public var description: String { "\(errorType): \(message)" }
    public var isNonRetryable: Bool { false }
}

/// The error activities (and workflows) throw to control how a failure is recorded and retried.
///
/// ```swift
/// throw ApplicationError(message: "rate limited", type: "LLMRateLimited",
///                        nextRetryDelay: .seconds(retryAfter))
/// ```
public struct ApplicationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var type: String
    public var isNonRetryable: Bool
    public var nextRetryDelay: Duration?
    public var details: Payload?

    public init(
        message: String, type: String, isNonRetryable: Bool = false,
        nextRetryDelay: Duration? = nil, details: Payload? = nil
    ) {
        self.message = message
        self.type = type
        self.isNonRetryable = isNonRetryable
        self.nextRetryDelay = nextRetryDelay
        self.details = details
    }

    public var description: String { "\(type): \(message)" }
}

/// Thrown into workflow code when an activity failed for good.
public struct ActivityFailedError: KeelError {
    public var activityType: String
    public var attempts: Int
    public var cause: Failure
    public var errorType: String { "ActivityFailed" }
    public var message: String {
        "activity \(activityType) failed after \(attempts) attempt(s) (\(cause.retryState?.rawValue ?? "failed")): \(cause)"
    }
    public init(activityType: String, attempts: Int, cause: Failure) {
        self.activityType = activityType
        self.attempts = attempts
        self.cause = cause
    }
}

/// Thrown into workflow code when a child workflow did not complete.
public struct ChildWorkflowFailedError: KeelError {
    public var workflowType: String
    public var workflowId: String
    public var cause: Failure
    public var errorType: String { "ChildWorkflowFailed" }
    public var message: String { "child workflow \(workflowType) \(workflowId) failed: \(cause)" }
}

/// Thrown into workflow code at the awaits that were pending when cancellation was requested.
/// A workflow that lets it escape ends as cancelled.
public struct CancelledError: KeelError {
    public var errorType: String { "Cancelled" }
    public var message: String { "the workflow was asked to cancel" }
    public var isNonRetryable: Bool { true }
    public init() {}
}

/// Thrown when activity options cannot work.
public struct InvalidOptionsError: KeelError {
    public var message: String
    public init(message: String) { self.message = message }
    public var errorType: String { "InvalidOptions" }
    public var isNonRetryable: Bool { true }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    /// A duration from seconds given as a `Double`. Saturates instead of trapping: a value from
    /// a message (a `Retry-After`, a timeout) may be huge, infinite or NaN (as zero).
    public static func seconds(double value: Double) -> Duration {
        let nanoseconds = (value * 1e9).rounded()
        guard !nanoseconds.isNaN else { return .zero }
        if nanoseconds >= 9.2e18 { return .nanoseconds(Int64.max) }
        if nanoseconds <= -9.2e18 { return .nanoseconds(Int64.min) }
        return .nanoseconds(Int64(nanoseconds))
    }
}
