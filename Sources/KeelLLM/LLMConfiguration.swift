import Foundation
import KeelCore
import Yams

/// One provider a worker can call.
public struct LLMProviderConfiguration: Codable, Sendable, Hashable {
    /// Which wire API the provider speaks.
    public enum API: String, Codable, Sendable, CaseIterable {
        /// Anthropic Messages (`POST {baseURL}/v1/messages`).
        case anthropic
        /// OpenAI-compatible Chat Completions (`POST {baseURL}/chat/completions`): OpenAI, vLLM,
        /// Ollama, llama.cpp server. `baseURL` includes the version path (`…/v1`).
        case openai
    }

    /// The name breakers, results and `LLMRequest.providers` use.
    public var name: String
    public var api: API
    public var baseURL: String
    public var model: String
    /// The environment variable holding the API key.
    public var apiKeyEnv: String?
    /// A file holding the API key (a mounted secret).
    public var apiKeyFile: String?
    /// Time one call may take, seconds (120).
    public var timeout: Double?
    /// A stream that sends nothing for this long is abandoned, seconds (30).
    public var idleTimeout: Double?
    /// Output token cap when the request sets none (1024).
    public var maxTokens: Int?
    /// False: left out of the default failover chain, called only by requests that name it
    /// (a local model behind the `gpu` queue). True by default.
    public var defaultChain: Bool?
    /// What the whole fleet may send this provider; the coordinator admits calls against it and
    /// corrects it from every response's rate-limit headers. Nil: learned from the headers alone.
    public var limits: ProviderLimits?

    public init(
        name: String, api: API, baseURL: String, model: String, apiKeyEnv: String? = nil,
        apiKeyFile: String? = nil, timeout: Double? = nil, idleTimeout: Double? = nil, maxTokens: Int? = nil
    ) {
        self.name = name
        self.api = api
        self.baseURL = baseURL
        self.model = model
        self.apiKeyEnv = apiKeyEnv
        self.apiKeyFile = apiKeyFile
        self.timeout = timeout
        self.idleTimeout = idleTimeout
        self.maxTokens = maxTokens
    }

    /// The API key, read when a call is made; never logged or recorded.
    func apiKey(environment: [String: String]) throws -> String? {
        if let apiKeyFile {
            do {
                return try String(contentsOfFile: apiKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw LLMError(
                    .notConfigured, "provider \(name): cannot read its API key file \(apiKeyFile): \(error.localizedDescription)",
                    provider: name, model: model)
            }
        }
        if let apiKeyEnv {
            guard let key = environment[apiKeyEnv], !key.isEmpty else {
                throw LLMError(
                    .notConfigured, "provider \(name): environment variable \(apiKeyEnv) (its API key) is not set",
                    provider: name, model: model)
            }
            return key
        }
        return nil
    }
}

/// Dollars per million tokens of one model.
public struct ModelPrice: Codable, Sendable, Hashable {
    public var inputPerMillion: Double
    public var outputPerMillion: Double

    public init(inputPerMillion: Double, outputPerMillion: Double) {
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
    }

    public func cost(inputTokens: Int64, outputTokens: Int64) -> Double {
        (Double(inputTokens) * inputPerMillion + Double(outputTokens) * outputPerMillion) / 1_000_000
    }
}

/// The LLM section of `keel.yaml`: providers in failover order, prices, breaker settings.
///
/// ```yaml
/// llm:
///   providers:
///     - name: anthropic
///       api: anthropic
///       baseURL: https://api.anthropic.com
///       model: claude-sonnet-4-5
///       apiKeyEnv: ANTHROPIC_API_KEY
///     - name: openai
///       api: openai
///       baseURL: https://api.openai.com/v1
///       model: gpt-4o-mini
///       apiKeyEnv: OPENAI_API_KEY
///   prices:
///     claude-sonnet-4-5: { inputPerMillion: 3, outputPerMillion: 15 }
///   circuitBreaker: { failureThreshold: 5, cooldownSeconds: 30 }
/// ```
public struct LLMConfiguration: Codable, Sendable, Hashable {
    public var providers: [LLMProviderConfiguration]
    /// By model name; a model absent here costs nothing (local models).
    public var prices: [String: ModelPrice]?
    public var circuitBreaker: BreakerSettings?
    /// Weights of fairness keys (tenants) when capacity is short: `fairness: {weights: {acme: 3}}`.
    public var fairness: FairnessSettings?
    /// From the file's top-level `taskQueues:` section (`{gpu: {maxConcurrent: 2}}`): the tasks of
    /// a queue that run at once across every worker.
    public var taskQueueLimits: [String: Int] = [:]

    private enum CodingKeys: String, CodingKey { case providers, prices, circuitBreaker, fairness }

    public struct FairnessSettings: Codable, Sendable, Hashable {
        public var weights: [String: Double]?

        public init(weights: [String: Double]? = nil) { self.weights = weights }
    }

    public struct BreakerSettings: Codable, Sendable, Hashable {
        public var failureThreshold: Int?
        public var cooldownSeconds: Double?

        public init(failureThreshold: Int? = nil, cooldownSeconds: Double? = nil) {
            self.failureThreshold = failureThreshold
            self.cooldownSeconds = cooldownSeconds
        }
    }

    public init(
        providers: [LLMProviderConfiguration], prices: [String: ModelPrice]? = nil,
        circuitBreaker: BreakerSettings? = nil
    ) {
        self.providers = providers
        self.prices = prices
        self.circuitBreaker = circuitBreaker
    }

    /// The provider names of the default failover chain, in order.
    public var chain: [String] { providers.filter { $0.defaultChain ?? true }.map(\.name) }

    public var circuitBreakerPolicy: CircuitBreakerPolicy {
        let defaults = CircuitBreakerPolicy()
        return CircuitBreakerPolicy(
            failureThreshold: circuitBreaker?.failureThreshold ?? defaults.failureThreshold,
            cooldown: .seconds(double: circuitBreaker?.cooldownSeconds ?? defaults.cooldown))
    }

    /// What the coordinator needs of each provider to admit calls: limits, output cap, prices.
    public var profiles: [String: ProviderProfile] {
        Dictionary(
            providers.map { provider in
                let price = price(of: provider.model)
                return (
                    provider.name,
                    ProviderProfile(
                        limits: provider.limits, maxTokens: provider.maxTokens ?? 1024,
                        inputPerMillion: price?.inputPerMillion ?? 0, outputPerMillion: price?.outputPerMillion ?? 0)
                )
            }, uniquingKeysWith: { first, _ in first })
    }

    /// The coordinator's admission settings from this section and the file's `taskQueues`.
    public func capacity(enabled: Bool = true) -> CapacityConfiguration {
        var capacity = CapacityConfiguration()
        capacity.enabled = enabled
        capacity.providers = profiles
        capacity.taskQueueLimits = taskQueueLimits
        capacity.fairnessWeights = fairness?.weights ?? [:]
        return capacity
    }

    public func provider(named name: String) -> LLMProviderConfiguration? {
        providers.first { $0.name == name }
    }

    /// The price of `model`: an exact entry, else the longest entry the model name starts with
    /// (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`).
    public func price(of model: String) -> ModelPrice? {
        guard let prices else { return nil }
        if let exact = prices[model] { return exact }
        return prices.filter { model.hasPrefix($0.key) }.max { $0.key.count < $1.key.count }?.value
    }

    /// Checks names, URLs and numbers; the message says which provider and field is wrong.
    public func validate() throws {
        var seen: Set<String> = []
        for provider in providers {
            func fail(_ message: String) -> LLMConfigurationError {
                LLMConfigurationError(message: "llm provider '\(provider.name)': \(message)")
            }
            if provider.name.isEmpty { throw LLMConfigurationError(message: "llm provider without a name") }
            if !seen.insert(provider.name).inserted { throw fail("the name is used twice") }
            guard let url = URL(string: provider.baseURL), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else { throw fail("baseURL '\(provider.baseURL)' is not an http(s) URL") }
            if provider.model.isEmpty { throw fail("model is empty") }
            if let timeout = provider.timeout, !(timeout > 0) { throw fail("timeout must be positive") }
            if let idle = provider.idleTimeout, !(idle > 0) { throw fail("idleTimeout must be positive") }
            if let maxTokens = provider.maxTokens, maxTokens <= 0 { throw fail("maxTokens must be positive") }
            do { try provider.limits?.validate() } catch let error as InvalidOptionsError { throw fail(error.message) }
        }
        for (key, weight) in fairness?.weights ?? [:] where !(weight > 0) {
            throw LLMConfigurationError(message: "llm fairness weight of '\(key)' must be positive")
        }
        if let threshold = circuitBreaker?.failureThreshold, threshold < 1 {
            throw LLMConfigurationError(message: "llm circuitBreaker.failureThreshold must be at least 1")
        }
        if let cooldown = circuitBreaker?.cooldownSeconds, !(cooldown > 0) {
            throw LLMConfigurationError(message: "llm circuitBreaker.cooldownSeconds must be positive")
        }
    }

    /// Reads the `llm:` section of a YAML (or JSON) configuration file.
    public static func load(path: String) throws -> LLMConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LLMConfigurationError(message: "cannot read configuration file \(path): \(error.localizedDescription)")
        }
        return try parse(text, source: path)
    }

    /// Parses the `llm:` section of a YAML (or JSON) document.
    public static func parse(_ text: String, source: String = "configuration") throws -> LLMConfiguration {
        struct Queue: Decodable { var maxConcurrent: Int? }
        struct File: Decodable {
            var llm: LLMConfiguration?
            var taskQueues: [String: Queue]?
        }
        let file: File
        do {
            file = try YAMLDecoder().decode(File.self, from: text)
        } catch let error as DecodingError {
            throw LLMConfigurationError(message: "\(source): \(describe(error))")
        } catch {
            throw LLMConfigurationError(message: "\(source): not valid YAML: \(error)")
        }
        guard var configuration = file.llm else {
            throw LLMConfigurationError(message: "\(source): no `llm:` section")
        }
        for (name, queue) in file.taskQueues ?? [:] {
            guard let cap = queue.maxConcurrent else {
                throw LLMConfigurationError(message: "\(source): taskQueues.\(name) sets no maxConcurrent")
            }
            guard cap >= 1 else {
                throw LLMConfigurationError(message: "\(source): taskQueues.\(name).maxConcurrent must be at least 1")
            }
            configuration.taskQueueLimits[name] = cap
        }
        do { try configuration.validate() } catch let error as LLMConfigurationError {
            throw LLMConfigurationError(message: "\(source): \(error.message)")
        }
        return configuration
    }

    /// The configuration a process uses: the file named by `path` or `KEEL_CONFIG` if any,
    /// else one provider from `KEEL_LLM_API`, `KEEL_LLM_BASE_URL`, `KEEL_LLM_MODEL` and
    /// `KEEL_LLM_API_KEY_ENV`, else nil.
    public static func resolve(path: String?, environment: [String: String]) throws -> LLMConfiguration? {
        if let path = path ?? environment["KEEL_CONFIG"], !path.isEmpty {
            return try load(path: path)
        }
        guard let baseURL = environment["KEEL_LLM_BASE_URL"], !baseURL.isEmpty else { return nil }
        let apiName = environment["KEEL_LLM_API"] ?? "openai"
        guard let api = LLMProviderConfiguration.API(rawValue: apiName) else {
            throw LLMConfigurationError(
                message:
                    "KEEL_LLM_API '\(apiName)' is not one of \(LLMProviderConfiguration.API.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        guard let model = environment["KEEL_LLM_MODEL"], !model.isEmpty else {
            throw LLMConfigurationError(message: "KEEL_LLM_BASE_URL is set but KEEL_LLM_MODEL is not")
        }
        let configuration = LLMConfiguration(providers: [
            LLMProviderConfiguration(
                name: environment["KEEL_LLM_PROVIDER_NAME"] ?? api.rawValue, api: api, baseURL: baseURL, model: model,
                apiKeyEnv: environment["KEEL_LLM_API_KEY_ENV"])
        ])
        try configuration.validate()
        return configuration
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "missing `\(key.stringValue)` at \(path(context).isEmpty ? "top level" : path(context))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// The LLM configuration cannot be used.
public struct LLMConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
