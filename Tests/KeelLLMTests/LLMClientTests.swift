import Foundation
import Keel
import KeelMockLLM
import KeelTestKit
import Synchronization
import Testing

/// The provider clients over libcurl against `keel mock-llm`, without the engine.
@Suite("LLM client over HTTP", .tags(.integration), .timeLimit(.minutes(2)))
struct LLMClientTests {
    @Test(arguments: [LLMProviderConfiguration.API.anthropic, .openai], [false, true])
    func answersWithUsageAndCost(api: LLMProviderConfiguration.API, stream: Bool) async throws {
        let mock = try await MockProvider.start(
            MockScenario(rules: [
                MockRule(responses: [
                    MockResponse(text: "the answer is 42", usage: MockUsage(inputTokens: 1000, outputTokens: 200))
                ])
            ]))
        defer { mock.stop() }
        let client = LLMClient(
            configuration: LLMConfiguration(
                providers: [mock.provider("p", api: api, model: "m-1")],
                prices: ["m-1": ModelPrice(inputPerMillion: 3, outputPerMillion: 15)]))
        let chunks = ChunkCounter()
        let answer = try await client.complete(LLMRequest(prompt: "question", system: "be brief", stream: stream)) { _, count in
            chunks.set(count)
        }
        #expect(answer.text == "the answer is 42")
        #expect(answer.provider == "p" && answer.model == "m-1")
        #expect(answer.usage == LLMUsage(inputTokens: 1000, outputTokens: 200, costUSD: 0.006))
        #expect(answer.tries.map(\.ok) == [true])
        #expect(chunks.value == (stream ? 4 : 0), "one chunk per word when streaming")
        let request = try #require(await mock.requests().first)
        #expect(request.api == api.rawValue && request.stream == stream)
        #expect(request.promptPreview == "be brief\nquestion")
    }

    @Test func theApiKeyIsSentButNeverReported() async throws {
        let mock = try await MockProvider.start(MockScenario(rules: [MockRule(responses: [MockResponse(status: 401)])]))
        defer { mock.stop() }
        let secret = "sk-test-\(UUID().uuidString)"
        let client = LLMClient(
            configuration: LLMConfiguration(providers: [mock.provider("p", model: "m", apiKeyEnv: "TEST_LLM_KEY")]),
            environment: ["TEST_LLM_KEY": secret])
        do {
            _ = try await client.complete(LLMRequest(prompt: "hi"))
            Issue.record("a 401 must fail")
        } catch let failure as LLMAttemptFailure {
            #expect(failure.error.kind == .authenticationFailed)
            let reported = "\(failure) \(String(decoding: try JSONEncoder().encode(failure.tries), as: UTF8.self))"
            #expect(!reported.contains(secret))
        }
        // Without the variable the call is not made at all, and the error names what to set.
        let unconfigured = LLMClient(
            configuration: LLMConfiguration(providers: [mock.provider("p", model: "m", apiKeyEnv: "TEST_LLM_KEY")]),
            environment: [:])
        do {
            _ = try await unconfigured.complete(LLMRequest(prompt: "hi"))
            Issue.record("a missing key must fail")
        } catch let failure as LLMAttemptFailure {
            #expect(failure.error.kind == .notConfigured)
            #expect(failure.error.message.contains("TEST_LLM_KEY"))
        }
        #expect(await mock.requests().count == 1)
    }

    @Test func unreachableProviderIsARetryableConnectionFailureAndFailsOver() async throws {
        let mock = try await MockProvider.start()
        defer { mock.stop() }
        let dead = LLMProviderConfiguration(name: "dead", api: .openai, baseURL: "http://127.0.0.1:9/v1", model: "x")
        let client = LLMClient(configuration: LLMConfiguration(providers: [dead, mock.provider("live", model: "m")]))
        let answer = try await client.complete(LLMRequest(prompt: "hi"))
        #expect(answer.provider == "live")
        #expect(answer.tries.map(\.errorType) == ["LLMConnectionFailed", nil])
    }

    @Test func rateLimitCarriesRetryAfterAndTheNextProviderIsTried() async throws {
        let mock = try await MockProvider.start(
            MockScenario(rules: [
                MockRule(match: MockMatch(model: "a"), responses: [MockResponse(status: 429, headers: ["Retry-After": "7"])]),
                MockRule(match: MockMatch(model: "b"), responses: [MockResponse(status: 529)])
            ]))
        defer { mock.stop() }
        let client = LLMClient(
            configuration: LLMConfiguration(providers: [mock.provider("a", model: "a"), mock.provider("b", model: "b")]))
        do {
            _ = try await client.complete(LLMRequest(prompt: "hi"))
            Issue.record("both providers fail")
        } catch let failure as LLMAttemptFailure {
            #expect(failure.tries.map(\.errorType) == ["LLMRateLimited", "LLMOverloaded"])
            #expect(failure.error.kind == .overloaded)
            #expect(failure.retryAfter == 7, "the rate limit's delay still applies to the next attempt")
        }
    }

    @Test func theMockIsDrivenOverHTTP() async throws {
        let mock = try await MockProvider.start()
        defer { mock.stop() }
        let http = CurlHTTPClient()
        let scenario = #"{"rules":[{"match":{"promptContains":"x"},"responses":[{"status":503}]}]}"#
        let (set, _) = try await http.send(HTTPRequest(url: mock.baseURL + "/_mock/scenario", body: Data(scenario.utf8)))
        #expect(set.status == 200)
        let (bad, body) = try await http.send(
            HTTPRequest(url: mock.baseURL + "/_mock/scenario", body: Data(#"{"rules":[{"responses":[]}]}"#.utf8)))
        #expect(bad.status == 400)
        #expect(String(decoding: body, as: UTF8.self).contains("rule 0 has no responses"))
        let client = LLMClient(configuration: LLMConfiguration(providers: [mock.provider("p", model: "m")]))
        await #expect(throws: LLMAttemptFailure.self) { try await client.complete(LLMRequest(prompt: "x")) }
        let (_, log) = try await http.send(HTTPRequest(url: mock.baseURL + "/_mock/requests", method: "GET"))
        let records = try JSONDecoder().decode([MockRequestRecord].self, from: log)
        #expect(records.map(\.status) == [503])
        let (reset, _) = try await http.send(HTTPRequest(url: mock.baseURL + "/_mock/reset", body: Data()))
        #expect(reset.status == 200)
        #expect(await mock.requests().isEmpty)
    }
}

final class ChunkCounter: Sendable {
    private let count = Mutex(0)
    func set(_ value: Int) { count.withLock { $0 = value } }
    var value: Int { count.withLock { $0 } }
}

@Suite("keel mock-llm and keel breakers commands", .tags(.integration), .timeLimit(.minutes(2)))
struct LLMCommandTests {
    @Test func mockLLMServesAScenarioFileAndRefusesABadOne() async throws {
        let directory = makeTemporaryDirectory("keel-mock-cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let scenario = directory.appendingPathComponent("scenario.json")
        try Data(#"{"rules":[{"responses":[{"status":429,"headers":{"Retry-After":"3"}}]}]}"#.utf8).write(to: scenario)
        let log = directory.appendingPathComponent("mock.log")
        let mock = try KeelProcess(["mock-llm", "--port", "0", "--scenario", scenario.path], environment: [:], log: log)
        defer { mock.terminate() }
        var port: Int?
        #expect(
            await eventually(20) {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                port = text.split(separator: "\n").first { $0.hasPrefix("keel mock-llm listening on") }
                    .flatMap { $0.split(separator: ":").last.flatMap { Int($0) } }
                return port != nil
            })
        let client = LLMClient(
            configuration: LLMConfiguration(providers: [
                LLMProviderConfiguration(
                    name: "mock", api: .anthropic, baseURL: "http://127.0.0.1:\(try #require(port))", model: "m")
            ]))
        do {
            _ = try await client.complete(LLMRequest(prompt: "hi"))
            Issue.record("the scenario answers 429")
        } catch let failure as LLMAttemptFailure {
            #expect(failure.error.kind == .rateLimited)
            #expect(failure.retryAfter == 3)
        }

        let broken = directory.appendingPathComponent("broken.json")
        try Data(#"{"rules":[{"responses":[{"status":1000}]}]}"#.utf8).write(to: broken)
        let refused = try KeelProcess(
            ["mock-llm", "--port", "0", "--scenario", broken.path], environment: [:],
            log: directory.appendingPathComponent("broken.log"))
        #expect(await eventually(20) { !refused.exists || !refused.process.isRunning })
        let output = try String(contentsOf: directory.appendingPathComponent("broken.log"), encoding: .utf8)
        #expect(output.contains("rule 0 response 0: status 1000 is not an HTTP status"), "\(output)")
    }
}

@Suite("keel mock-llm enforces rate limits, the client reads them", .tags(.integration), .timeLimit(.minutes(2)))
struct MockLimitTests {
    @Test(arguments: [LLMProviderConfiguration.API.anthropic, .openai])
    func limitsAreEnforcedAndEveryAnswerCarriesTheHeaders(api: LLMProviderConfiguration.API) async throws {
        let mock = try await MockProvider.start(
            MockScenario(limits: [MockLimits(requestsPerMinute: 2, tokensPerMinute: 100_000)]))
        defer { mock.stop() }
        let client = LLMClient(configuration: LLMConfiguration(providers: [mock.provider("p", api: api, model: "m")]))
        let first = try await client.complete(LLMRequest(prompt: "one"))
        let limits = try #require(first.tries.first?.limits)
        #expect(limits.requests?.limit == 2)
        #expect(limits.requests?.remaining == 1)
        #expect((limits.tokens?.limit ?? 0) == 100_000)
        _ = try await client.complete(LLMRequest(prompt: "two"))
        do {
            _ = try await client.complete(LLMRequest(prompt: "three"))
            Issue.record("the third request in a minute is over the limit")
        } catch let failure as LLMAttemptFailure {
            #expect(failure.error.kind == .rateLimited)
            let wait = try #require(failure.retryAfter)
            #expect(wait >= 1 && wait <= 31, "a request comes back every 30 s")
            #expect(failure.tries.first?.limits?.requests?.remaining == 0)
        }
        let log = await mock.requests()
        #expect(log.map(\.status) == [200, 200, 429])
        #expect(log.last?.rateLimited == true)
    }

    @Test func aClientThatGivesUpIsLoggedAsClosedEarly() async throws {
        let mock = try await MockProvider.start(MockScenario(rules: [MockRule(responses: [MockResponse(hang: true)])]))
        defer { mock.stop() }
        let task = Task {
            try await LLMClient(configuration: LLMConfiguration(providers: [mock.provider("p", model: "m")]))
                .complete(LLMRequest(prompt: "hang"))
        }
        #expect(await eventually(30) { await mock.requests().count == 1 }, "a loaded suite can take seconds to log it")
        let cancelled = Date()
        task.cancel()
        _ = await task.result
        #expect(await eventually(30) { await mock.requests().first?.closedEarly == true })
        let closedAt = try #require(await mock.requests().first?.closedAt)
        #expect(closedAt.timeIntervalSince(cancelled) < 1, "a cancelled call closes its connection at once")
    }
}
