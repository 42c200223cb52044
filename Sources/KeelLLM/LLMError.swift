import Foundation
import KeelCore

/// The stable type names of LLM failures, as history, the dead-letter queue and retry policies
/// see them (`docs/llm.md` has the table).
public enum LLMErrorKind: String, Codable, Sendable, CaseIterable {
    case badRequest = "LLMBadRequest"
    case authenticationFailed = "LLMAuthenticationFailed"
    case permissionDenied = "LLMPermissionDenied"
    case modelNotFound = "LLMModelNotFound"
    case requestTooLarge = "LLMRequestTooLarge"
    case contextLengthExceeded = "LLMContextLengthExceeded"
    case contentPolicy = "LLMContentPolicy"
    case rateLimited = "LLMRateLimited"
    case serverError = "LLMServerError"
    case unavailable = "LLMUnavailable"
    case overloaded = "LLMOverloaded"
    case timeout = "LLMTimeout"
    case connectionFailed = "LLMConnectionFailed"
    case streamInterrupted = "LLMStreamInterrupted"
    case invalidResponse = "LLMInvalidResponse"
    /// Workflow-level: the model's output failed validation (invalid JSON, wrong schema).
    case invalidOutput = "LLMInvalidOutput"
    /// Every provider the call could use has its circuit breaker open.
    case circuitOpen = "CircuitOpen"
    /// The worker has no provider by the requested name, or none configured.
    case notConfigured = "LLMNotConfigured"

    /// Whether the failure says the provider is unwell, for its circuit breaker. A bad request
    /// or a rate limit says nothing about the provider's health.
    public var isProviderFault: Bool {
        switch self {
        case .serverError, .unavailable, .overloaded, .timeout, .connectionFailed, .streamInterrupted, .invalidResponse:
            return true
        default:
            return false
        }
    }

    /// Whether another attempt (or another provider) can succeed where this one failed.
    public var isRetryable: Bool {
        switch self {
        case .rateLimited, .serverError, .unavailable, .overloaded, .timeout, .connectionFailed,
            .streamInterrupted, .invalidResponse:
            return true
        case .badRequest, .authenticationFailed, .permissionDenied, .modelNotFound, .requestTooLarge,
            .contextLengthExceeded, .contentPolicy, .invalidOutput, .circuitOpen, .notConfigured:
            return false
        }
    }

}

/// A failed call to one provider.
public struct LLMError: Error, Sendable, CustomStringConvertible {
    public var kind: LLMErrorKind
    public var message: String
    public var provider: String?
    public var model: String?
    public var status: Int?
    /// From `Retry-After` (or `retry-after-ms`), seconds.
    public var retryAfter: Double?
    /// Tokens the call consumed before failing (a stream cut mid-way).
    public var usage: LLMUsage?

    public init(
        _ kind: LLMErrorKind, _ message: String, provider: String? = nil, model: String? = nil, status: Int? = nil,
        retryAfter: Double? = nil, usage: LLMUsage? = nil
    ) {
        self.kind = kind
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryAfter = retryAfter
        self.usage = usage
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// Maps HTTP answers and transport failures of providers to ``LLMErrorKind``.
public enum LLMErrorClassifier {
    /// The kind for a non-2xx status; `body` refines 400s (context overflow, content policy).
    public static func kind(status: Int, body: String) -> LLMErrorKind {
        let lowered = body.lowercased()
        switch status {
        case 400:
            if contextOverflowMarkers.contains(where: lowered.contains) { return .contextLengthExceeded }
            if contentPolicyMarkers.contains(where: lowered.contains) { return .contentPolicy }
            if lowered.contains("overloaded_error") { return .overloaded }
            return .badRequest
        case 401: return .authenticationFailed
        case 403: return .permissionDenied
        case 404: return .modelNotFound
        case 408: return .timeout
        case 413: return contextOverflowMarkers.contains(where: lowered.contains) ? .contextLengthExceeded : .requestTooLarge
        case 422: return .contentPolicy
        case 429: return .rateLimited
        case 503: return .unavailable
        case 529: return .overloaded
        case 500...599: return lowered.contains("overloaded") ? .overloaded : .serverError
        default: return .badRequest
        }
    }

    /// The kind for a transfer that broke off.
    public static func kind(transport error: HTTPTransportError) -> LLMErrorKind {
        switch error.kind {
        case .timeout: return .timeout
        case .connect: return .connectionFailed
        case .interrupted, .cancelled, .other: return error.head == nil ? .connectionFailed : .streamInterrupted
        }
    }

    static let contextOverflowMarkers = [
        "context_length_exceeded", "context length", "maximum context", "context window", "prompt is too long",
        "too many tokens"
    ]
    static let contentPolicyMarkers = ["content_policy", "content_filter", "content policy", "safety system"]

    /// The delay a `Retry-After` (seconds or an HTTP date) or `retry-after-ms` header asks for,
    /// also in the `llm_provider-` forms a gateway (LiteLLM) passes on from its upstream.
    public static func retryAfter(_ headers: [String: String], now: Date = Date()) -> Double? {
        for prefix in RateLimitHeaders.prefixes {
            if let millis = headers[prefix + "retry-after-ms"].flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }),
                millis >= 0
            {
                return millis / 1000
            }
            guard let value = headers[prefix + "retry-after"]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else {
                continue
            }
            if let seconds = Double(value) { return max(seconds, 0) }
            if let date = httpDate(value) { return max(date.timeIntervalSince(now), 0) }
        }
        return nil
    }

    /// An HTTP date in any of its three forms.
    static func httpDate(_ value: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: value) { return date }
        }
        return nil
    }

    /// The human part of a provider's error body (`error.message` in both APIs), shortened.
    static func message(fromBody body: Data) -> String {
        struct Envelope: Decodable {
            struct Inner: Decodable { var message: String? }
            var error: Inner?
            var message: String?
        }
        let text =
            (try? JSONDecoder().decode(Envelope.self, from: body)).flatMap { $0.error?.message ?? $0.message }
            ?? String(decoding: body, as: UTF8.self)
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.count > 300 ? String(trimmed.prefix(300)) + "…" : trimmed
    }
}
