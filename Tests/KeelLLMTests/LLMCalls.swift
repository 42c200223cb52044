import Foundation
import Keel
import KeelTestKit

/// Calls the LLM once per prompt, in order, and reports what happened to each call.
struct LLMCalls: Workflow {
    static let name = "test-llm-calls"

    struct Input: Codable, Sendable {
        var prompts: [String]
        var stream: Bool?
        var maximumAttempts: Int?
        var heartbeatTimeout: Double?
        var startToCloseTimeout: Double?
    }

    struct Call: Codable, Sendable {
        var prompt: String
        var text: String?
        var provider: String?
        var calls: Int?
        var usage: LLMUsage?
        var error: String?
        var attempts: Int?
    }

    struct Output: Codable, Sendable {
        var calls: [Call]
        var budget: Budget
    }

    func run(context: WorkflowContext, input: Input) async throws -> Output {
        let options = LLM.activityOptions(
            startToCloseTimeout: .seconds(double: input.startToCloseTimeout ?? 20),
            heartbeatTimeout: .seconds(double: input.heartbeatTimeout ?? 30),
            retryPolicy: RetryPolicy(
                initialInterval: .milliseconds(200), maximumAttempts: input.maximumAttempts ?? 3,
                nonRetryableErrorTypes: RetryPolicy.llmNonRetryableErrorTypes))
        var calls: [Call] = []
        for prompt in input.prompts {
            do {
                let answer = try await context.llm(LLMRequest(prompt: prompt, stream: input.stream ?? false), options: options)
                calls.append(
                    Call(
                        prompt: prompt, text: answer.text, provider: answer.provider, calls: answer.callCount, usage: answer.usage
                    ))
            } catch let error as ActivityFailedError {
                calls.append(Call(prompt: prompt, error: error.cause.type, attempts: error.attempts))
            } catch let error as any KeelError {
                calls.append(Call(prompt: prompt, error: error.errorType, attempts: 0))
            }
        }
        return Output(calls: calls, budget: context.budget)
    }
}
