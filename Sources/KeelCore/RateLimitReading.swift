import Foundation

/// What one provider response said about the caller's rate limits: for each kind of capacity,
/// the limit, what remains of it and when it is whole again; and, on a 429, how long to wait.
///
/// Workers read it from the response headers (`anthropic-ratelimit-*`, `x-ratelimit-*`,
/// `retry-after`, and the `llm_provider-` forms gateways pass through) and send it with the
/// attempt's report, in each call's entry of `tries` (`"limits": {…}`). The coordinator corrects
/// its capacity buckets with it.
public struct RateLimitReading: Codable, Sendable, Hashable {
    /// One kind of capacity.
    public struct Window: Codable, Sendable, Hashable {
        /// The provider's limit for the window (per minute for every API Keel reads).
        public var limit: Int64?
        /// What is left of it now.
        public var remaining: Int64?
        /// Seconds until the window is full again.
        public var resetSeconds: Double?

        public init(limit: Int64? = nil, remaining: Int64? = nil, resetSeconds: Double? = nil) {
            self.limit = limit
            self.remaining = remaining
            self.resetSeconds = resetSeconds
        }

        public var isEmpty: Bool { limit == nil && remaining == nil && resetSeconds == nil }
    }

    public var requests: Window?
    public var tokens: Window?
    public var inputTokens: Window?
    public var outputTokens: Window?
    /// Seconds a rate-limited response asked the caller to wait.
    public var retryAfter: Double?

    public init(
        requests: Window? = nil, tokens: Window? = nil, inputTokens: Window? = nil, outputTokens: Window? = nil,
        retryAfter: Double? = nil
    ) {
        self.requests = requests
        self.tokens = tokens
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.retryAfter = retryAfter
    }

    /// Whether the response said nothing about limits.
    public var isEmpty: Bool {
        [requests, tokens, inputTokens, outputTokens].allSatisfy { $0?.isEmpty ?? true } && retryAfter == nil
    }

    /// The windows by kind, those present.
    public var windows: [(CapacityKind, Window)] {
        [(.requests, requests), (.tokens, tokens), (.inputTokens, inputTokens), (.outputTokens, outputTokens)]
            .compactMap { kind, window in window.map { (kind, $0) } }
    }

    /// How long until a call can succeed again: `retryAfter` if given, else the latest reset of
    /// a window with nothing remaining; nil when no window is exhausted.
    public var waitSeconds: Double? {
        if let retryAfter { return retryAfter }
        return windows.filter { $0.1.remaining == 0 }.compactMap(\.1.resetSeconds).max()
    }
}

/// A kind of provider capacity, as limits, headers and metrics name it.
public enum CapacityKind: String, Codable, Sendable, CaseIterable, Hashable {
    case requests
    case tokens
    case inputTokens = "input_tokens"
    case outputTokens = "output_tokens"
    /// Calls in flight at once.
    case concurrent
}
