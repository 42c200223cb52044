import Foundation
import KeelCore

/// One message of a conversation.
public struct LLMMessage: Codable, Sendable, Hashable {
    /// `user` or `assistant`.
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public static func user(_ content: String) -> LLMMessage { LLMMessage(role: "user", content: content) }
    public static func assistant(_ content: String) -> LLMMessage { LLMMessage(role: "assistant", content: content) }
}

/// What the `llm.complete` activity asks a provider for. Provider-neutral: each provider client
/// turns it into its own API's request.
public struct LLMRequest: Codable, Sendable, Hashable {
    public var messages: [LLMMessage]
    public var system: String?
    /// Output token cap; defaults to the provider's configured `maxTokens`.
    public var maxTokens: Int?
    public var temperature: Double?
    /// Stream the answer (server-sent events): the activity heartbeats on chunks, so a provider
    /// that stops sending is caught by the heartbeat timeout.
    public var stream: Bool?
    /// Provider names to try, in order. Nil: the worker's configured chain.
    public var providers: [String]?

    public init(
        messages: [LLMMessage], system: String? = nil, maxTokens: Int? = nil, temperature: Double? = nil,
        stream: Bool = false, providers: [String]? = nil
    ) {
        self.messages = messages
        self.system = system
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.stream = stream ? true : nil
        self.providers = providers
    }

    /// A single user prompt.
    public init(prompt: String, system: String? = nil, maxTokens: Int? = nil, stream: Bool = false) {
        self.init(messages: [.user(prompt)], system: system, maxTokens: maxTokens, stream: stream)
    }

    public var isStreaming: Bool { stream ?? false }

    /// Every character of the prompt, for estimating tokens when a provider reports none.
    var promptCharacters: Int { (system?.count ?? 0) + messages.reduce(0) { $0 + $1.content.count } }
}

/// Tokens and cost of one call or one attempt.
public struct LLMUsage: Codable, Sendable, Hashable {
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var costUSD: Double
    /// Set when the provider did not report the count (a stream cut before its usage event) and
    /// it was estimated from characters (4 per token).
    public var estimated: Bool?

    public init(inputTokens: Int64 = 0, outputTokens: Int64 = 0, costUSD: Double = 0, estimated: Bool? = nil) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.costUSD = costUSD
        self.estimated = estimated
    }

    public static let zero = LLMUsage()

    public var totalTokens: Int64 { inputTokens + outputTokens }

    public static func + (lhs: LLMUsage, rhs: LLMUsage) -> LLMUsage {
        LLMUsage(
            inputTokens: lhs.inputTokens + rhs.inputTokens, outputTokens: lhs.outputTokens + rhs.outputTokens,
            costUSD: lhs.costUSD + rhs.costUSD,
            estimated: (lhs.estimated ?? false) || (rhs.estimated ?? false) ? true : nil)
    }

    static func estimate(characters: Int) -> Int64 { Int64((characters + 3) / 4) }
}

/// One call to one provider within an attempt. Listed under `tries` in results and failure
/// details; the coordinator's circuit breakers count them (`provider`, `ok`).
public struct LLMTry: Codable, Sendable, Hashable {
    public var provider: String
    public var model: String
    public var ok: Bool
    /// HTTP status, when one arrived.
    public var status: Int?
    /// The error type name, for a failed call.
    public var errorType: String?
    /// For a failed call: whether it counts against the provider's circuit breaker (server
    /// errors, overload, timeouts, connection failures do; client errors and rate limits not).
    public var providerFault: Bool?
    public var message: String?
    public var durationMs: Int
    public var usage: LLMUsage?
    /// What the response's headers said about the caller's rate limits; the coordinator's
    /// capacity buckets learn from it.
    public var limits: RateLimitReading?
}

/// The answer of the `llm.complete` activity.
public struct LLMResponse: Codable, Sendable, Hashable {
    public var text: String
    /// The provider (configured name) and model that answered.
    public var provider: String
    public var model: String
    public var finishReason: String?
    /// Usage of every call of this attempt, failed ones included.
    public var usage: LLMUsage
    /// Every call of this attempt, in order; the last one answered.
    public var tries: [LLMTry]

    /// How many calls this attempt made (failover included).
    public var callCount: Int { tries.count }
}

/// Details of a failed `llm.complete` attempt (the failure's `details`): the engine counts the
/// `usage`, the circuit breakers count the `tries`.
public struct LLMFailureDetails: Codable, Sendable, Hashable {
    public var provider: String?
    public var model: String?
    public var status: Int?
    public var usage: LLMUsage
    public var tries: [LLMTry]
}
