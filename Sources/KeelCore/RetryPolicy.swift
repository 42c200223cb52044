import Foundation

/// How failed activity attempts are retried. Semantics follow Temporal's, plus jitter and
/// `Retry-After` support.
///
/// The delay before attempt n+1 is `min(initialInterval * backoffCoefficient^(n-1), maximumInterval)`,
/// reduced by up to `jitter` (a fraction). A failure that carries its own `nextRetryDelay` (an HTTP
/// `Retry-After`) uses that delay instead, not capped by `maximumInterval`.
///
/// The defaults are Temporal's: 1 s, coefficient 2, maximum 100 s, unlimited attempts. They are
/// unsafe for LLM calls (an invalid request or an exhausted quota is retried forever); use
/// ``RetryPolicy/llmRecommended`` for those.
public struct RetryPolicy: Codable, Sendable, Hashable {
    public var initialInterval: Double
    public var backoffCoefficient: Double
    /// Upper bound on the computed delay, seconds. Defaults to 100 times `initialInterval`.
    public var maximumInterval: Double?
    /// 0 means unlimited.
    public var maximumAttempts: Int
    /// Error type names that are never retried (exact match).
    public var nonRetryableErrorTypes: [String]
    /// A fraction in 0...1: each delay is reduced by a random part of up to this fraction.
    public var jitter: Double

    public init(
        initialInterval: Duration = .seconds(1), backoffCoefficient: Double = 2.0,
        maximumInterval: Duration? = nil, maximumAttempts: Int = 0,
        nonRetryableErrorTypes: [String] = [], jitter: Double = 0
    ) {
        self.initialInterval = initialInterval.seconds
        self.backoffCoefficient = backoffCoefficient
        self.maximumInterval = maximumInterval?.seconds
        self.maximumAttempts = maximumAttempts
        self.nonRetryableErrorTypes = nonRetryableErrorTypes
        self.jitter = jitter
    }

    /// Temporal's defaults. Unbounded attempts: not for LLM calls.
    public static let `default` = RetryPolicy()

    /// No retries at all.
    public static let none = RetryPolicy(maximumAttempts: 1)

    /// Error type names of the LLM layer that must never be retried.
    public static let llmNonRetryableErrorTypes = [
        "LLMBadRequest", "LLMAuthenticationFailed", "LLMPermissionDenied", "LLMModelNotFound",
        "LLMRequestTooLarge", "LLMContextLengthExceeded", "LLMContentPolicy", "LLMInvalidOutput",
        "LLMNotConfigured", "BudgetExhausted", "CircuitOpen"
    ]

    /// The policy to start from for LLM calls: 2 s doubling to at most 60 s, 5 attempts, 20 %
    /// jitter so a fleet does not retry in lockstep, and client errors never retried.
    public static let llmRecommended = RetryPolicy(
        initialInterval: .seconds(2), backoffCoefficient: 2, maximumInterval: .seconds(60),
        maximumAttempts: 5, nonRetryableErrorTypes: llmNonRetryableErrorTypes, jitter: 0.2)

    /// The effective cap on a computed delay, seconds.
    public var effectiveMaximumInterval: Double { maximumInterval ?? initialInterval * 100 }

    /// The delay after attempt `attempt` (1-based) failed, before jitter, seconds.
    public func backoff(afterAttempt attempt: Int) -> Double {
        let exponent = Double(max(attempt - 1, 0))
        let raw = initialInterval * pow(backoffCoefficient, exponent)
        return min(raw.isFinite ? raw : .infinity, effectiveMaximumInterval)
    }

    /// Checks the policy; the message says which field is wrong.
    public func validate() throws {
        func fail(_ message: String) -> InvalidOptionsError { InvalidOptionsError(message: "retry policy: " + message) }
        if initialInterval <= 0 { throw fail("initialInterval must be positive") }
        if backoffCoefficient < 1 { throw fail("backoffCoefficient must be at least 1") }
        if let maximumInterval, maximumInterval < initialInterval {
            throw fail("maximumInterval must be at least initialInterval")
        }
        if maximumAttempts < 0 { throw fail("maximumAttempts must be 0 (unlimited) or more") }
        if !(0...1).contains(jitter) { throw fail("jitter must be a fraction between 0 and 1") }
    }

    /// What to do after attempt `attempt` failed with `failure`.
    ///
    /// - Parameters:
    ///   - random: a number in 0..<1 used for jitter.
    ///   - now: the time of the failure.
    ///   - deadline: the schedule-to-close deadline, if any; a retry that would start after it is
    ///     not made.
    public func decide(
        attempt: Int, failure: Failure, now: Date, deadline: Date?, random: Double
    ) -> RetryDecision {
        if failure.nonRetryable || nonRetryableErrorTypes.contains(failure.type) {
            return .stop(.nonRetryableFailure)
        }
        if maximumAttempts > 0, attempt >= maximumAttempts {
            return .stop(.maximumAttemptsReached)
        }
        let delay: Double
        if let requested = failure.nextRetryDelay {
            delay = max(requested, 0)
        } else {
            let base = backoff(afterAttempt: attempt)
            delay = base * (1 - jitter * min(max(random, 0), 1))
        }
        if let deadline, now.addingTimeInterval(delay) >= deadline {
            return .stop(.timeout)
        }
        return .retry(after: delay)
    }
}

/// The outcome of ``RetryPolicy/decide(attempt:failure:now:deadline:random:)``.
public enum RetryDecision: Equatable, Sendable {
    /// Start the next attempt after this many seconds.
    case retry(after: Double)
    /// Stop; the activity fails with this state.
    case stop(RetryState)

    /// Whether another attempt follows.
    public var willRetry: Bool {
        if case .retry = self { return true }
        return false
    }
}
