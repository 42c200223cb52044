import Foundation

/// How much of a provider a whole Keel fleet may use (`limits:` of a provider in `keel.yaml`).
/// A starting point: every response's rate-limit headers correct it.
public struct ProviderLimits: Codable, Sendable, Hashable {
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var inputTokensPerMinute: Int64?
    public var outputTokensPerMinute: Int64?
    /// Calls in flight at once, across every worker.
    public var maxConcurrent: Int?

    public init(
        requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil, inputTokensPerMinute: Int64? = nil,
        outputTokensPerMinute: Int64? = nil, maxConcurrent: Int? = nil
    ) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.inputTokensPerMinute = inputTokensPerMinute
        self.outputTokensPerMinute = outputTokensPerMinute
        self.maxConcurrent = maxConcurrent
    }

    /// The per-minute limit of `kind`, if set.
    public func perMinute(_ kind: CapacityKind) -> Int64? {
        switch kind {
        case .requests: return requestsPerMinute
        case .tokens: return tokensPerMinute
        case .inputTokens: return inputTokensPerMinute
        case .outputTokens: return outputTokensPerMinute
        case .concurrent: return maxConcurrent.map(Int64.init)
        }
    }

    /// The message says which field is wrong.
    public func validate() throws {
        for kind in CapacityKind.allCases {
            if let value = perMinute(kind), value < 1 {
                throw InvalidOptionsError(message: "limits: \(kind.fieldName) must be at least 1")
            }
        }
    }
}

extension CapacityKind {
    /// The field of ``ProviderLimits`` that sets it.
    public var fieldName: String {
        switch self {
        case .requests: return "requestsPerMinute"
        case .tokens: return "tokensPerMinute"
        case .inputTokens: return "inputTokensPerMinute"
        case .outputTokens: return "outputTokensPerMinute"
        case .concurrent: return "maxConcurrent"
        }
    }
}

/// What the coordinator knows of one provider before any call: its configured limits, the
/// output cap a request that sets none gets, and its prices, for estimating a call's cost.
public struct ProviderProfile: Codable, Sendable, Hashable {
    public var limits: ProviderLimits?
    /// Output tokens a request without `maxTokens` may use (the provider's `maxTokens`, 1024).
    public var maxTokens: Int
    /// Dollars per million input and output tokens of the provider's model (0: free or unknown).
    public var inputPerMillion: Double
    public var outputPerMillion: Double

    public init(limits: ProviderLimits? = nil, maxTokens: Int = 1024, inputPerMillion: Double = 0, outputPerMillion: Double = 0) {
        self.limits = limits
        self.maxTokens = maxTokens
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
    }

    public func cost(inputTokens: Int64, outputTokens: Int64) -> Double {
        (Double(inputTokens) * inputPerMillion + Double(outputTokens) * outputPerMillion) / 1_000_000
    }
}
