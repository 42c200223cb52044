import Foundation
import KeelCore

/// LLM calls from workflow code, with the workflow-level protections: the run's budget is
/// checked before dispatch, and providers whose circuit breaker is open are skipped (the
/// decision is recorded in history).
///
/// ```swift
/// let summary = try await context.llm(LLMRequest(prompt: "Summarise: \(text)"))
/// print(summary.text, summary.usage.costUSD, context.budget.remainingTokens ?? -1)
/// ```
public enum LLM {
    /// The retry policy to start from: 2 s doubling to 60 s, 5 attempts, 20 % jitter, and every
    /// non-retryable LLM error type (``RetryPolicy/llmNonRetryableErrorTypes``) never retried.
    public static var recommendedRetryPolicy: RetryPolicy { .llmRecommended }

    /// Options for `llm.complete`: the `llm` queue, 2 minutes per attempt, a 30 s heartbeat
    /// timeout, 10 minutes for all attempts, the recommended retry policy, and the run's budget.
    public static func activityOptions(
        taskQueue: String = "llm", startToCloseTimeout: Duration = .seconds(120),
        heartbeatTimeout: Duration = .seconds(30), scheduleToCloseTimeout: Duration = .seconds(600),
        retryPolicy: RetryPolicy = .llmRecommended, parkOnExhaustion: Bool = false
    ) -> ActivityOptions {
        ActivityOptions(
            taskQueue: taskQueue, startToCloseTimeout: startToCloseTimeout,
            scheduleToCloseTimeout: scheduleToCloseTimeout, heartbeatTimeout: heartbeatTimeout,
            retryPolicy: retryPolicy, parkOnExhaustion: parkOnExhaustion, countsAgainstBudget: true)
    }
}

/// Thrown by ``WorkflowContext/llm(_:options:)`` when every provider the call could use has its
/// circuit breaker open. Nothing is sent. Non-retryable.
public struct CircuitOpenError: KeelError {
    public var providers: [String]
    public var errorType: String { LLMErrorKind.circuitOpen.rawValue }
    public var isNonRetryable: Bool { true }
    public var message: String {
        "the circuit breaker of every provider is open (\(providers.joined(separator: ", "))); `keel breakers` shows when they let a probe through"
    }
}

extension WorkflowContext {
    /// Calls an LLM through the `llm.complete` activity.
    ///
    /// Throws ``BudgetExhaustedError`` when the run's budget is spent and ``CircuitOpenError``
    /// when every provider's breaker is open — both before anything is sent — and
    /// `ActivityFailedError` when the attempts failed.
    public func llm(_ request: LLMRequest, options: ActivityOptions = LLM.activityOptions()) async throws -> LLMResponse {
        var options = options
        options.countsAgainstBudget = true
        if budget.isExhausted {
            throw BudgetExhaustedError(budget: budget, activityType: LLMCompleteActivity.name)
        }
        var request = request
        let gate = try circuitGate { [environment] in request.providers ?? environment.providerChain }
        if !gate.providers.isEmpty {
            if gate.admitted.isEmpty { throw CircuitOpenError(providers: gate.providers) }
            // The whole chain this call may use: the coordinator picks from it again for every
            // attempt, against the breakers and the providers' capacity at that moment.
            request.providers = gate.providers
        }
        return try await execute(LLMCompleteActivity.self, input: request, options: options)
    }
}
