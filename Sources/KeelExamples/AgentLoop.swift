import Foundation
import Keel

/// N sequential LLM steps whose notes carry forward: each step sees what the previous ones
/// concluded. If step 7 of 12 fails, it alone is retried; if the coordinator dies at step 7,
/// steps 1-6 are replayed from history, not paid for again.
public struct AgentLoop: Workflow {
    public static let name = "agent-loop"

    public struct Input: Codable, Sendable {
        public var task: String
        public var steps: Int
        public init(task: String, steps: Int) {
            self.task = task
            self.steps = steps
        }
    }

    public struct Step: Codable, Sendable, Hashable {
        public var step: Int
        public var output: String
        public var provider: String
        public var tokens: Int64
    }

    public struct Output: Codable, Sendable {
        public var steps: [Step]
        public var tokensUsed: Int64
        public var costUSD: Double
    }

    final class Progress {
        var done = 0
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Output {
        guard (1...100).contains(input.steps) else {
            throw ApplicationError(message: "steps must be between 1 and 100", type: "InvalidInput", isNonRetryable: true)
        }
        let progress = Progress()
        context.onQuery("status") { ["step": progress.done, "of": input.steps] }
        var steps: [Step] = []
        for number in 1...input.steps {
            let notes = steps.map { "Step \($0.step): \($0.output)" }.joined(separator: "\n")
            let answer = try await context.llm(
                LLMRequest(
                    prompt:
                        "[agent step \(number) of \(input.steps)] Task: \(input.task)\n\nNotes so far:\n\(notes.isEmpty ? "(none)" : notes)\n\nDo the next step.",
                    maxTokens: 512))
            steps.append(Step(step: number, output: answer.text, provider: answer.provider, tokens: answer.usage.totalTokens))
            progress.done = number
        }
        return Output(steps: steps, tokensUsed: context.budget.spent.totalTokens, costUSD: context.budget.spent.costUSD)
    }
}
