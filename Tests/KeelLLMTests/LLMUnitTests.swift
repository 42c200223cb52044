import Foundation
import Keel
import Testing

@Suite("LLM error classification, Retry-After, SSE, configuration, breakers", .tags(.unit))
struct LLMUnitTests {
    @Test(arguments: [
        (400, "{\"error\":{\"message\":\"bad field\"}}", LLMErrorKind.badRequest),
        (400, "{\"error\":{\"code\":\"context_length_exceeded\"}}", .contextLengthExceeded),
        (400, "prompt is too long: 210000 tokens > 200000 maximum", .contextLengthExceeded),
        (400, "{\"error\":{\"code\":\"content_policy_violation\"}}", .contentPolicy),
        (401, "", .authenticationFailed), (403, "", .permissionDenied), (404, "", .modelNotFound),
        (408, "", .timeout), (413, "", .requestTooLarge), (422, "", .contentPolicy), (429, "", .rateLimited),
        (500, "", .serverError), (502, "", .serverError), (503, "", .unavailable), (504, "", .serverError),
        (529, "", .overloaded), (500, "{\"error\":{\"type\":\"overloaded_error\"}}", .overloaded)
    ])
    func statusesMapToStableTypes(status: Int, body: String, kind: LLMErrorKind) {
        #expect(LLMErrorClassifier.kind(status: status, body: body) == kind)
    }

    @Test func clientErrorsAreNeverRetriedAndServerErrorsAre() {
        for kind in [
            LLMErrorKind.badRequest, .authenticationFailed, .permissionDenied, .modelNotFound, .requestTooLarge,
            .contextLengthExceeded, .contentPolicy
        ] {
            #expect(!kind.isRetryable, "\(kind)")
        }
        for kind in [
            LLMErrorKind.rateLimited, .serverError, .unavailable, .overloaded, .timeout, .connectionFailed, .streamInterrupted
        ] {
            #expect(kind.isRetryable, "\(kind)")
        }
        // The recommended policy lists exactly the non-retryable kinds (and the budget stop).
        let nonRetryable = Set(LLMErrorKind.allCases.filter { !$0.isRetryable }.map(\.rawValue)).union(["BudgetExhausted"])
        #expect(Set(RetryPolicy.llmNonRetryableErrorTypes) == nonRetryable)
        #expect(LLM.recommendedRetryPolicy.nonRetryableErrorTypes == RetryPolicy.llmNonRetryableErrorTypes)
    }

    @Test func retryAfterReadsSecondsDatesAndMilliseconds() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(LLMErrorClassifier.retryAfter(["retry-after": "2"], now: now) == 2)
        #expect(LLMErrorClassifier.retryAfter(["retry-after": " 1.5 "], now: now) == 1.5)
        #expect(LLMErrorClassifier.retryAfter(["retry-after-ms": "250", "retry-after": "9"], now: now) == 0.25)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let date = formatter.string(from: now.addingTimeInterval(30))
        #expect(LLMErrorClassifier.retryAfter(["retry-after": date], now: now) == 30)
        #expect(
            LLMErrorClassifier.retryAfter(["retry-after": formatter.string(from: now.addingTimeInterval(-30))], now: now) == 0)
        #expect(LLMErrorClassifier.retryAfter(["retry-after": "soon"], now: now) == nil)
        #expect(LLMErrorClassifier.retryAfter([:], now: now) == nil)
    }

    @Test func serverSentEventsSurviveAnyChunking() {
        let stream =
            "event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n"
        let expected = [
            ServerSentEvent(event: "message_start", data: "{\"a\":1}"),
            ServerSentEvent(event: nil, data: "line one\nline two"),
            ServerSentEvent(event: nil, data: "[DONE]")
        ]
        let bytes = Array(stream.utf8)
        for size in [1, 2, 3, 7, bytes.count] {
            var parser = ServerSentEventParser()
            var events: [ServerSentEvent] = []
            for start in stride(from: 0, to: bytes.count, by: size) {
                events += parser.consume(Data(bytes[start..<min(start + size, bytes.count)]))
            }
            #expect(events == expected, "chunks of \(size) bytes")
        }
    }

    @Test func configurationParsesAndExplainsMistakes() throws {
        let yaml = """
            llm:
              providers:
                - name: anthropic
                  api: anthropic
                  baseURL: https://api.anthropic.com
                  model: claude-sonnet-4-5
                  apiKeyEnv: ANTHROPIC_API_KEY
                - name: local
                  api: openai
                  baseURL: http://127.0.0.1:8000/v1
                  model: llama-3
              prices:
                claude-sonnet-4-5: { inputPerMillion: 3, outputPerMillion: 15 }
              circuitBreaker: { failureThreshold: 4, cooldownSeconds: 10 }
            """
        let configuration = try LLMConfiguration.parse(yaml)
        #expect(configuration.chain == ["anthropic", "local"])
        #expect(configuration.price(of: "claude-sonnet-4-5-20250929")?.outputPerMillion == 15)
        #expect(configuration.price(of: "llama-3") == nil)
        #expect(configuration.circuitBreakerPolicy == CircuitBreakerPolicy(failureThreshold: 4, cooldown: .seconds(10)))

        func message(_ text: String) -> String {
            do {
                _ = try LLMConfiguration.parse(text, source: "keel.yaml")
                return ""
            } catch { return "\(error)" }
        }
        #expect(
            message("llm:\n  providers:\n    - name: a\n      api: anthropic\n      baseURL: https://x\n").contains(
                "missing `model` at .llm.providers[0]"))
        #expect(
            message("llm:\n  providers:\n    - {name: a, api: anthropic, baseURL: 'ftp://x', model: m}\n").contains(
                "baseURL 'ftp://x' is not an http(s) URL"))
        #expect(
            message("llm:\n  providers:\n    - {name: a, api: gemini, baseURL: 'https://x', model: m}\n").contains(
                ".llm.providers[0].api"))
        #expect(message("other: 1\n") == "keel.yaml: no `llm:` section")

        let fromEnvironment = try LLMConfiguration.resolve(
            path: nil, environment: ["KEEL_LLM_BASE_URL": "http://127.0.0.1:11434/v1", "KEEL_LLM_MODEL": "qwen"])
        #expect(fromEnvironment?.providers.first?.api == .openai)
        #expect(try LLMConfiguration.resolve(path: nil, environment: [:]) == nil)
    }

    @Test func breakerOpensFailsFastProbesAndCloses() {
        let breakers = CircuitBreakers(policy: CircuitBreakerPolicy(failureThreshold: 3, cooldown: .seconds(10)))
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        breakers.record("p", success: false, now: start)
        breakers.record("p", success: true, now: start)  // a success resets the count
        for _ in 1...2 { breakers.record("p", success: false, now: start) }
        #expect(breakers.admit("p", now: start) == .allow)
        breakers.record("p", success: false, now: start)
        #expect(breakers.admit("p", now: start.addingTimeInterval(9.9)) == .reject)
        #expect(breakers.admit("p", now: start.addingTimeInterval(10)) == .probe)
        #expect(breakers.admit("p", now: start.addingTimeInterval(10.1)) == .reject, "one probe at a time")
        breakers.record("p", success: false, now: start.addingTimeInterval(11))
        #expect(breakers.snapshots().first?.state == .open, "a failed probe re-opens")
        #expect(breakers.admit("p", now: start.addingTimeInterval(21)) == .probe)
        breakers.record("p", success: true, now: start.addingTimeInterval(22))
        #expect(breakers.snapshots().first?.state == .closed)
        #expect(breakers.admit("p", now: start.addingTimeInterval(22)) == .allow)
        #expect(breakers.admit("other") == .allow)

        // Bad requests and rate limits say nothing about the provider's health.
        let tries = Payload(
            data: Data(#"{"tries":[{"provider":"q","ok":false,"providerFault":false},{"provider":"q","ok":false}]}"#.utf8))
        let event = HistoryEvent(
            id: 1, time: start, kind: .activityFailed, ref: 1, attempt: 1,
            failure: Failure(type: "LLMBadRequest", message: "", details: tries))
        for _ in 1...2 { breakers.observe(event, now: start) }
        #expect(breakers.snapshots().first { $0.provider == "q" }?.consecutiveFailures == 2, "only the faults count")
    }

    @Test func usageIsReadFromResultsAndFailureDetails() throws {
        let result = try Payload(encoding: ["text": "x"], field: "r")
        #expect(Spend.reported(in: result) == nil)
        let withUsage = Payload(data: Data(#"{"text":"x","usage":{"inputTokens":10,"outputTokens":5,"costUSD":0.5}}"#.utf8))
        #expect(Spend.reported(in: withUsage) == Spend(inputTokens: 10, outputTokens: 5, costUSD: 0.5))
        let failure = Failure(type: "LLMStreamInterrupted", message: "cut", details: withUsage)
        let event = HistoryEvent(id: 1, time: Date(), kind: .activityFailed, ref: 1, attempt: 1, failure: failure)
        #expect(Spend.reported(by: event)?.totalTokens == 15)
        var discarded = event
        discarded.name = HistoryEvent.discardedMark
        #expect(Spend.reported(by: discarded) == nil, "counted when it parked")
    }
}
