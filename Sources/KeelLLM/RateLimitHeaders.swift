import Foundation
import KeelCore

/// Reads what a provider's response headers say about the caller's rate limits, in every
/// spelling Keel knows:
///
/// - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
///   the reset an RFC 3339 time;
/// - OpenAI and compatible servers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the
///   reset a duration (`6m0s`, `1.5s`, `20ms`) or seconds;
/// - `retry-after` (seconds or an HTTP date) and `retry-after-ms`;
/// - each of these behind the `llm_provider-` prefix, as LiteLLM and other gateways pass the
///   upstream's headers on.
///
/// Header names are lower-case (as ``HTTPResponseHead`` gives them).
public enum RateLimitHeaders {
    static let prefixes = ["", "llm_provider-"]

    /// The reading of `headers`, nil when they say nothing about limits.
    public static func reading(_ headers: [String: String], now: Date = Date()) -> RateLimitReading? {
        var reading = RateLimitReading()
        for prefix in prefixes {
            func value(_ name: String) -> String? {
                headers[prefix + name].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
            }
            func window(limit: String, remaining: String, reset: String) -> RateLimitReading.Window? {
                let window = RateLimitReading.Window(
                    limit: value(limit).flatMap { Int64($0) }, remaining: value(remaining).flatMap { Int64($0) },
                    resetSeconds: value(reset).flatMap { resetSeconds($0, now: now) })
                return window.isEmpty ? nil : window
            }
            for (kind, name) in [
                (CapacityKind.requests, "requests"), (.tokens, "tokens"), (.inputTokens, "input-tokens"),
                (.outputTokens, "output-tokens")
            ] {
                let found =
                    window(
                        limit: "anthropic-ratelimit-\(name)-limit", remaining: "anthropic-ratelimit-\(name)-remaining",
                        reset: "anthropic-ratelimit-\(name)-reset")
                    ?? window(
                        limit: "x-ratelimit-limit-\(name)", remaining: "x-ratelimit-remaining-\(name)",
                        reset: "x-ratelimit-reset-\(name)")
                guard let found else { continue }
                switch kind {
                case .requests: reading.requests = reading.requests ?? found
                case .tokens: reading.tokens = reading.tokens ?? found
                case .inputTokens: reading.inputTokens = reading.inputTokens ?? found
                case .outputTokens: reading.outputTokens = reading.outputTokens ?? found
                case .concurrent: break
                }
            }
        }
        reading.retryAfter = LLMErrorClassifier.retryAfter(headers, now: now)
        return reading.isEmpty ? nil : reading
    }

    /// Seconds until a reset: a duration (`1h2m3s`, `6m0s`, `1.5s`, `250ms`), plain seconds, or
    /// an RFC 3339 / HTTP date.
    public static func resetSeconds(_ text: String, now: Date = Date()) -> Double? {
        if let seconds = Double(text) { return seconds >= 0 ? seconds : nil }
        if let duration = DurationText.seconds(text) { return duration }
        if let date = rfc3339(text) ?? LLMErrorClassifier.httpDate(text) { return max(date.timeIntervalSince(now), 0) }
        return nil
    }

    static func rfc3339(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}
