import Foundation
import Keel

/// Summarises a batch of documents: fetch each (`default` queue), one LLM summary each (`llm`
/// queue), a few at a time, within the run's token budget and behind the providers' circuit
/// breakers. A document that cannot be summarised is dead-lettered with its context and listed
/// in `failedIds`; the batch goes on.
///
/// ```
/// keel start document-processing --id batch-1 --budget-tokens 50000 --wait \
///     --input '{"documentIds": ["q3-report", "incident-17"], "documentsURL": "http://127.0.0.1:8090"}'
/// keel query batch-1 status
/// ```
public struct DocumentProcessing: Workflow {
    public static let name = "document-processing"

    public struct Input: Codable, Sendable {
        public var documentIds: [String]
        /// Where `GET /documents/{id}` serves the texts.
        public var documentsURL: String
        /// Documents in flight at once (4).
        public var concurrency: Int?
        /// What to ask of the model (a one-paragraph summary).
        public var instructions: String?
        /// Stream the answers (false).
        public var stream: Bool?

        public init(
            documentIds: [String], documentsURL: String, concurrency: Int? = nil, instructions: String? = nil, stream: Bool? = nil
        ) {
            self.documentIds = documentIds
            self.documentsURL = documentsURL
            self.concurrency = concurrency
            self.instructions = instructions
            self.stream = stream
        }
    }

    public struct Summary: Codable, Sendable, Hashable {
        public var id: String
        public var summary: String
        public var provider: String
        public var tokens: Int64
    }

    public struct Output: Codable, Sendable {
        public var processed: Int
        public var failed: Int
        public var tokensUsed: Int64
        public var costUSD: Double
        public var budgetRemainingTokens: Int64?
        public var budgetRemainingCostUSD: Double?
        /// Each provider's breaker when the batch ended.
        public var circuit: [String: CircuitState]
        public var results: [Summary]
        public var failedIds: [String]
        /// Why each failed document failed (an error type).
        public var errors: [String: String]
    }

    /// The `status` query.
    public struct Status: Codable, Sendable {
        public var total: Int
        public var processed: Int
        public var failed: Int
        public var inFlight: Int
        public var retries: Int
        public var tokens: Int64
        public var costUSD: Double
    }

    final class Progress {
        var total = 0
        var inFlight = 0
        var results: [String: Summary] = [:]
        var errors: [String: String] = [:]
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Output {
        let progress = Progress()
        progress.total = input.documentIds.count
        context.onQuery("status") {
            Status(
                total: progress.total, processed: progress.results.count, failed: progress.errors.count,
                inFlight: progress.inFlight, retries: context.retriedAttempts, tokens: context.budget.spent.totalTokens,
                costUSD: context.budget.spent.costUSD)
        }
        let fetchOptions = ActivityOptions(
            taskQueue: "default", startToCloseTimeout: .seconds(30), scheduleToCloseTimeout: .seconds(300),
            retryPolicy: RetryPolicy(
                initialInterval: .seconds(1), maximumAttempts: 5, nonRetryableErrorTypes: ["DocumentNotFound"]))
        let llmOptions = LLM.activityOptions(scheduleToCloseTimeout: .seconds(300))
        let instructions = input.instructions ?? "Summarise this document in one paragraph for an executive."

        /// A document's outcome; errors that are not about the document (cancellation, eviction)
        /// propagate and end the run.
        @Sendable func process(_ id: String) async throws -> (String, Outcome) {
            do {
                let text = try await context.execute(
                    FetchDocument.self, input: .init(baseURL: input.documentsURL, id: id), options: fetchOptions)
                let answer = try await context.llm(
                    LLMRequest(prompt: "[\(id)] \(instructions)\n\n\(text)", stream: input.stream ?? false), options: llmOptions)
                return (
                    id, .done(Summary(id: id, summary: answer.text, provider: answer.provider, tokens: answer.usage.totalTokens))
                )
            } catch let error as ActivityFailedError {
                return (id, .failed(error.cause.type))
            } catch let error as BudgetExhaustedError {
                return (id, .failed(error.errorType))
            } catch let error as CircuitOpenError {
                return (id, .failed(error.errorType))
            }
        }

        let width = max(input.concurrency ?? 4, 1)
        try await withThrowingTaskGroup(of: (String, Outcome).self) { group in
            var pending = input.documentIds[...]
            func launch() {
                guard let id = pending.popFirst() else { return }
                progress.inFlight += 1
                group.addTask { try await process(id) }
            }
            for _ in 0..<width { launch() }
            while let (id, outcome) = try await group.next() {
                progress.inFlight -= 1
                switch outcome {
                case .done(let summary): progress.results[id] = summary
                case .failed(let type): progress.errors[id] = type
                }
                launch()
            }
        }

        let budget = context.budget
        let chain = try context.circuitStates { context.environment.providerChain }
        return Output(
            processed: progress.results.count, failed: progress.errors.count, tokensUsed: budget.spent.totalTokens,
            costUSD: budget.spent.costUSD, budgetRemainingTokens: budget.remainingTokens,
            budgetRemainingCostUSD: budget.remainingCostUSD, circuit: chain,
            results: input.documentIds.compactMap { progress.results[$0] },
            failedIds: input.documentIds.filter { progress.errors[$0] != nil }, errors: progress.errors)
    }

    enum Outcome: Sendable {
        case done(Summary)
        case failed(String)
    }
}
