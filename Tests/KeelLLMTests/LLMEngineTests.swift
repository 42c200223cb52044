import Foundation
import Keel
import KeelMockLLM
import KeelTestKit
import Testing

/// The LLM kit end to end: workflows on a coordinator, `llm.complete` on a worker, both on the
/// real broker and a real SQLite file, calling `keel mock-llm` over HTTP.
@Suite("LLM calls through the engine", .serialized, .tags(.integration), .timeLimit(.minutes(3)))
struct LLMEngineTests {
    static func stack(
        _ scenario: MockScenario, providers: [(name: String, model: String)] = [("primary", "model-a")],
        breaker: LLMConfiguration.BreakerSettings? = nil, prices: [String: ModelPrice]? = nil
    ) async throws -> LLMStack {
        let mock = try await MockProvider.start(scenario)
        let llm = LLMConfiguration(
            providers: providers.map { mock.provider($0.name, model: $0.model) }, prices: prices, circuitBreaker: breaker)
        var workflows = WorkflowRegistry()
        workflows.register(LLMCalls.self)
        return try LLMStack(mock: mock, llm: llm, workflows: workflows)
    }

    @Test func clientErrorsAreSentOnceAndFailWithTheirType() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(match: MockMatch(promptContains: "doc-400"), responses: [MockResponse(status: 400)]),
                MockRule(match: MockMatch(promptContains: "doc-401"), responses: [MockResponse(status: 401)]),
                MockRule(match: MockMatch(promptContains: "doc-422"), responses: [MockResponse(status: 422)])
            ]),
            providers: [("primary", "model-a"), ("secondary", "model-b")])
        defer { stack.stop() }
        let (output, _) = try await stack.run(
            LLMCalls.self, "client-errors", .init(prompts: ["doc-400", "doc-401", "doc-422"], maximumAttempts: 5))
        #expect(output.calls.map(\.error) == ["LLMBadRequest", "LLMAuthenticationFailed", "LLMContentPolicy"])
        #expect(output.calls.map(\.attempts) == [1, 1, 1])
        // One call per activity: neither retried nor failed over to the secondary.
        let requests = await stack.mock.requests()
        #expect(requests.map(\.promptPreview) == ["doc-400", "doc-401", "doc-422"])
        #expect(requests.allSatisfy { $0.model == "model-a" })
    }

    @Test func rateLimitWaitsForRetryAfter() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(responses: [
                    MockResponse(status: 429, headers: ["Retry-After": "2"]), MockResponse(status: 200, text: "done")
                ])
            ]))
        defer { stack.stop() }
        let (output, _) = try await stack.run(LLMCalls.self, "rate-limited", .init(prompts: ["summarise"]))
        #expect(output.calls.first?.text == "done")
        let requests = await stack.mock.requests()
        try #require(requests.count == 2)
        #expect(requests.map(\.status) == [429, 200])
        // The policy's own interval is 200 ms: the 2 s came from Retry-After.
        let gap = requests[1].time.timeIntervalSince(requests[0].time)
        #expect(gap >= 2.0, "the next attempt started \(gap) s after the 429")
        // Not the policy's maximum either; generous, since the suite loads both cores.
        #expect(gap < 15.0)
    }

    @Test func primaryOutageFailsOverWithinTheAttempt() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [MockRule(match: MockMatch(model: "model-a"), responses: [MockResponse(status: 500)])]),
            providers: [("primary", "model-a"), ("secondary", "model-b")])
        defer { stack.stop() }
        let (output, run) = try await stack.run(LLMCalls.self, "failover", .init(prompts: ["one", "two"]))
        #expect(output.calls.map(\.provider) == ["secondary", "secondary"])
        #expect(output.calls.map(\.calls) == [2, 2])
        #expect(await stack.mock.requests().map(\.model) == ["model-a", "model-b", "model-a", "model-b"])
        // One attempt each: the failover happened inside the activity.
        let events = try stack.store().events(runId: run.runId)
        #expect(events.filter { $0.kind == .activityStarted }.count == 2)
        #expect(!events.contains { $0.kind == .activityFailed })
    }

    @Test func providerWideOutageOpensTheBreakerAndStopsTheFlood() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [MockRule(responses: [MockResponse(status: 503)])]),
            breaker: .init(failureThreshold: 3, cooldownSeconds: 300))
        defer { stack.stop() }
        let prompts = (1...10).map { "document \($0)" }
        let (output, run) = try await stack.run(LLMCalls.self, "outage", .init(prompts: prompts, maximumAttempts: 2))
        // Call 1: two attempts, both 503. Call 2: the first attempt is the third failure, which
        // opens the breaker, so its retry is refused. Calls 3-10 are refused before dispatch.
        #expect(output.calls.map(\.error) == ["LLMUnavailable", "CircuitOpen"] + Array(repeating: "CircuitOpen", count: 8))
        #expect(await stack.mock.requests().count == 3)
        let breakers = try stack.store().circuitBreakers()
        #expect(breakers.map(\.provider) == ["primary"])
        #expect(breakers.first?.state == .open)
        let shown = try await stack.keel(["breakers"])
        #expect(shown.status == 0)
        #expect(
            shown.output.split(separator: "\n").contains { $0.hasPrefix("primary") && $0.contains(" open ") }, "\(shown.output)")
        // The decisions are in history: markers that replay reads instead of the live breakers.
        let markers = try stack.store().events(runId: run.runId).filter {
            $0.kind == .markerRecorded && $0.name == "circuitBreakers"
        }
        #expect(markers.count == 10)
        #expect(try markers.last?.payload?.decode(CircuitGate.self) == CircuitGate(providers: ["primary"], decisions: [.reject]))
        // Replay elsewhere (no breakers, no provider configuration) takes the same path.
        var workflows = WorkflowRegistry()
        workflows.register(LLMCalls.self)
        let replay = try HistoryReplayer(workflows: workflows).replay(try stack.store().export(workflowId: "outage"))
        #expect(replay.nondeterminism == nil)
        #expect(replay.outcome != nil)
    }

    @Test func cutStreamIsRetriedAndItsPartialUsageCounts() async throws {
        let text = (1...40).map { "word\($0)" }.joined(separator: " ")
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(responses: [
                    MockResponse(text: text, cutAfterChunks: 10, usage: MockUsage(inputTokens: 500)),
                    MockResponse(text: text, usage: MockUsage(inputTokens: 500, outputTokens: 60))
                ])
            ]),
            prices: ["model-a": ModelPrice(inputPerMillion: 3, outputPerMillion: 15)])
        defer { stack.stop() }
        let (output, run) = try await stack.run(LLMCalls.self, "cut-stream", .init(prompts: ["stream it"], stream: true))
        #expect(output.calls.first?.text == text)
        let events = try stack.store().events(runId: run.runId)
        let failed = try #require(events.first { $0.kind == .activityFailed })
        #expect(failed.failure?.type == "LLMStreamInterrupted")
        #expect(failed.failure?.retryState == .willRetry)
        let details = try #require(try failed.failure?.details?.decode(LLMFailureDetails.self))
        #expect(details.usage.inputTokens == 500, "input tokens from message_start")
        #expect(details.usage.outputTokens > 0 && details.usage.estimated == true, "output estimated from the 10 chunks")
        // The run's spend and the workflow's budget both count the cut attempt.
        let expected = details.usage.totalTokens + 560
        #expect(run.spend.totalTokens == expected)
        #expect(output.budget.spent.totalTokens == expected)
        #expect(abs(run.spend.costUSD - (details.usage.costUSD + (500 * 3 + 60 * 15) / 1e6)) < 1e-9)
    }

    @Test func hungStreamIsCaughtByTheHeartbeatTimeout() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(responses: [
                    MockResponse(text: "a b c d e f", stallAfterChunks: 1),
                    MockResponse(text: "answered")
                ])
            ]))
        defer { stack.stop() }
        let started = Date()
        let (output, run) = try await stack.run(
            LLMCalls.self, "hung", .init(prompts: ["hang"], stream: true, heartbeatTimeout: 2, startToCloseTimeout: 30))
        #expect(output.calls.first?.text == "answered")
        let timedOut = try #require(try stack.store().events(runId: run.runId).first { $0.kind == .activityTimedOut })
        #expect(timedOut.failure?.timeoutKind == .heartbeat)
        #expect(Date().timeIntervalSince(started) < 15, "caught by the 2 s heartbeat timeout, not start-to-close")
    }

    @Test func budgetStopsDispatchOnceSpent() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(responses: [MockResponse(text: "ok", usage: MockUsage(inputTokens: 3000, outputTokens: 1000))])
            ]))
        defer { stack.stop() }
        let (output, run) = try await stack.run(
            LLMCalls.self, "budget", .init(prompts: (1...5).map { "chunk \($0)" }), budget: SpendLimit(maxTokens: 10_000))
        #expect(output.calls.map(\.error) == [nil, nil, nil, "BudgetExhausted", "BudgetExhausted"])
        #expect(await stack.mock.requests().count == 3, "nothing is sent once the budget is spent")
        #expect(output.budget.spent.totalTokens == 12_000)
        #expect(output.budget.remainingTokens == 0)
        #expect(run.spend.totalTokens == 12_000)
        let listed = try await stack.keel(["list"])
        #expect(listed.output.contains("12000 tok $0.0000"), "\(listed.output)")
        let shown = try await stack.keel(["show", "budget"])
        #expect(shown.output.contains("spend 9000 input + 3000 output tokens, $0.0000 of budget 10000 tokens"), "\(shown.output)")
    }
}

extension Tag {
    @Tag static var integration: Self
    @Tag static var unit: Self
}
