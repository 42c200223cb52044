import Foundation
import Keel
import KeelExamples
import KeelMockLLM
import KeelTestKit
import Testing

/// The document-processing pipeline end to end: fetches from the mock's document endpoint on a
/// `default` worker, summaries on an `llm` worker, the real broker and SQLite.
@Suite("document-processing pipeline", .serialized, .tags(.integration), .timeLimit(.minutes(3)))
struct DocumentProcessingTests {
    static func stack(_ scenario: MockScenario, breaker: LLMConfiguration.BreakerSettings? = nil) async throws -> LLMStack {
        let mock = try await MockProvider.start(scenario)
        var workflows = WorkflowRegistry()
        workflows.register(DocumentProcessing.self)
        var activities = ActivityRegistry()
        activities.register(FetchDocument())
        return try LLMStack(
            mock: mock, llm: LLMConfiguration(providers: [mock.provider("primary", model: "model-a")], circuitBreaker: breaker),
            workflows: workflows, activities: activities)
    }

    static func input(_ stack: LLMStack, _ ids: [String], concurrency: Int = 3) -> DocumentProcessing.Input {
        DocumentProcessing.Input(documentIds: ids, documentsURL: stack.mock.baseURL, concurrency: concurrency)
    }

    @Test func summarisesEveryDocumentAndDeadLettersTheRejectedOnes() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(
                    match: MockMatch(promptContains: "[doc-3]"), responses: [MockResponse(status: 400, message: "rejected")]),
                MockRule(responses: [MockResponse(text: "summary", usage: MockUsage(inputTokens: 100, outputTokens: 20))])
            ]))
        defer { stack.stop() }
        let ids = (1...6).map { "doc-\($0)" }
        let (output, _) = try await stack.run(
            DocumentProcessing.self, "batch", Self.input(stack, ids), budget: SpendLimit(maxTokens: 100_000))
        #expect(output.processed == 5)
        #expect(output.failedIds == ["doc-3"])
        #expect(output.errors == ["doc-3": "LLMBadRequest"])
        #expect(output.results.map(\.id) == ["doc-1", "doc-2", "doc-4", "doc-5", "doc-6"])
        #expect(output.tokensUsed == 600)
        #expect(output.budgetRemainingTokens == 99_400)
        #expect(output.circuit == ["primary": .closed])
        // The rejected document waits in the dead-letter queue with its context.
        let dead = try DeadLetterQueue(url: stack.url, topology: stack.topology).list()
        #expect(dead.compactMap(\.entry).map(\.activityType) == ["llm.complete"])
        #expect(dead.first?.entry?.input.json.contains("[doc-3]") == true)
        #expect(dead.first?.entry?.failure.type == "LLMBadRequest")
    }

    @Test func aSpentBudgetStopsTheBatch() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(responses: [MockResponse(text: "summary", usage: MockUsage(inputTokens: 250, outputTokens: 50))])
            ]))
        defer { stack.stop() }
        let (output, _) = try await stack.run(
            DocumentProcessing.self, "budget", Self.input(stack, (1...6).map { "doc-\($0)" }, concurrency: 1),
            budget: SpendLimit(maxTokens: 1000))
        #expect(output.processed == 4)
        #expect(output.failedIds == ["doc-5", "doc-6"])
        #expect(Set(output.errors.values) == ["BudgetExhausted"])
        #expect(await stack.mock.requests().count == 4)
        #expect(output.budgetRemainingTokens == 0)
    }

    @Test func anOpenBreakerFailsTheRestFast() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [MockRule(responses: [MockResponse(status: 500)])]),
            breaker: .init(failureThreshold: 2, cooldownSeconds: 600))
        defer { stack.stop() }
        let (output, _) = try await stack.run(
            DocumentProcessing.self, "outage", Self.input(stack, (1...8).map { "doc-\($0)" }, concurrency: 1))
        #expect(output.processed == 0)
        #expect(output.circuit == ["primary": .open])
        #expect(output.errors.values.filter { $0 == "CircuitOpen" }.count >= 6)
        #expect(await stack.mock.requests().count == 2, "the breaker stopped the flood after two calls")
    }
}

extension Tag {
    @Tag static var integration: Self
}
