import Foundation
import Keel
import KeelMockLLM
import Testing

@Suite("Rate-limit headers in every spelling", .tags(.unit))
struct RateLimitHeaderTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func anthropicHeadersGiveEveryWindowWithResetsAsTimes() throws {
        let reset = ISO8601DateFormatter().string(from: now.addingTimeInterval(42))
        let reading = try #require(
            RateLimitHeaders.reading(
                [
                    "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
                    "anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-input-tokens-limit": "30000",
                    "anthropic-ratelimit-input-tokens-remaining": "0", "anthropic-ratelimit-input-tokens-reset": reset,
                    "anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-tokens-remaining": "7000"
                ], now: now))
        #expect(reading.requests == .init(limit: 50, remaining: 49, resetSeconds: 42))
        #expect(reading.inputTokens == .init(limit: 30000, remaining: 0, resetSeconds: 42))
        #expect(reading.outputTokens == .init(limit: 8000))
        #expect(reading.tokens == .init(remaining: 7000))
        #expect(reading.waitSeconds == 42, "the exhausted window says how long to wait")
    }

    @Test func openAIHeadersGiveDurations() throws {
        let reading = try #require(
            RateLimitHeaders.reading(
                [
                    "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "150000",
                    "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6ms"
                ], now: now))
        #expect(reading.requests == .init(limit: 60, remaining: 0, resetSeconds: 360))
        #expect(reading.tokens?.resetSeconds == 0.006)
        #expect(reading.waitSeconds == 360)
        #expect(RateLimitHeaders.resetSeconds("1h2m3.5s") == 3723.5)
        #expect(RateLimitHeaders.resetSeconds("1.5s") == 1.5)
        #expect(RateLimitHeaders.resetSeconds("20") == 20)
        #expect(RateLimitHeaders.resetSeconds("soon") == nil)
        #expect(RateLimitHeaders.resetSeconds("5x") == nil)
    }

    @Test func gatewayPrefixedHeadersAreReadToo() throws {
        // LiteLLM's 429: no Retry-After of its own, the upstream's behind `llm_provider-`.
        let headers = ["llm_provider-retry-after": "60", "llm_provider-x-ratelimit-remaining-requests": "0"]
        #expect(LLMErrorClassifier.retryAfter(headers, now: now) == 60)
        let reading = try #require(RateLimitHeaders.reading(headers, now: now))
        #expect(reading.retryAfter == 60)
        #expect(reading.requests?.remaining == 0)
        #expect(LLMErrorClassifier.retryAfter(["llm_provider-retry-after-ms": "1500"], now: now) == 1.5)
        #expect(RateLimitHeaders.reading(["content-type": "application/json"], now: now) == nil)
    }

    @Test func theMockLimiterFormatsDurationsAsOpenAIDoes() {
        #expect(RateLimitHeaders.resetSeconds("1m30s") == 90)
        #expect(RateLimitHeaders.resetSeconds("6.5s") == 6.5)
    }
}
