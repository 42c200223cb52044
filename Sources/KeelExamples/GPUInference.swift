import Foundation
import Keel

/// Inference on a local model server (vLLM, Ollama, llama.cpp: OpenAI-compatible) through the
/// `gpu` queue. Its workers run with a small concurrency — the bulkhead — so a flood of GPU work
/// waits in its own queue and never takes the `llm` queue's workers.
public struct GPUInference: Workflow {
    public static let name = "gpu-inference"

    public struct Input: Codable, Sendable {
        public var prompts: [String]
        /// The provider of the gpu workers' configuration to call (`local`).
        public var provider: String?
        /// Prompts in flight at once from this run (8); the gpu workers' concurrency caps the rest.
        public var concurrency: Int?
        public init(prompts: [String], provider: String? = nil, concurrency: Int? = nil) {
            self.prompts = prompts
            self.provider = provider
            self.concurrency = concurrency
        }
    }

    public struct Output: Codable, Sendable {
        public var outputs: [String]
        public var tokensUsed: Int64
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Output {
        let options = LLM.activityOptions(
            taskQueue: "gpu", startToCloseTimeout: .seconds(600), scheduleToCloseTimeout: .seconds(3600))
        let provider = input.provider ?? "local"
        var outputs = [String?](repeating: nil, count: input.prompts.count)
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var next = 0
            func launch() {
                guard next < input.prompts.count else { return }
                let index = next
                next += 1
                group.addTask {
                    let answer = try await context.llm(
                        LLMRequest(messages: [.user("[gpu] " + input.prompts[index])], providers: [provider]), options: options)
                    return (index, answer.text)
                }
            }
            for _ in 0..<max(input.concurrency ?? 8, 1) { launch() }
            while let (index, text) = try await group.next() {
                outputs[index] = text
                launch()
            }
        }
        return Output(outputs: outputs.map { $0 ?? "" }, tokensUsed: context.budget.spent.totalTokens)
    }
}
