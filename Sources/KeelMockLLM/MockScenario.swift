import Foundation

/// What `keel mock-llm` answers: rules tried in order, each a match and a sequence of
/// responses. A request gets the next response of the first rule that matches; the last
/// response of a sequence repeats. With no matching rule it answers 200 with `defaultText`.
///
/// ```json
/// {"rules": [
///   {"match": {"promptContains": "doc-7"}, "responses": [{"status": 400}]},
///   {"match": {"model": "primary-model"},
///    "responses": [{"status": 429, "headers": {"Retry-After": "2"}}, {"status": 200, "text": "ok"}]}
/// ]}
/// ```
public struct MockScenario: Codable, Sendable, Hashable {
    public var rules: [MockRule]
    /// The answer text when no rule matches, or a rule's response sets none.
    public var defaultText: String?
    /// Faults of the example pipelines' business endpoints.
    public var services: MockServicesScenario?
    /// Rate limits enforced like a provider's, each on the requests its `match` selects (by
    /// path prefix when providers are told apart by base URL).
    public var limits: [MockLimits]?

    public init(
        rules: [MockRule] = [], defaultText: String? = nil, services: MockServicesScenario? = nil, limits: [MockLimits]? = nil
    ) {
        self.rules = rules
        self.defaultText = defaultText
        self.services = services
        self.limits = limits
    }

    public func validate() throws {
        for (index, rule) in rules.enumerated() {
            if rule.responses.isEmpty {
                throw MockScenarioError(message: "rule \(index) has no responses")
            }
            for (position, response) in rule.responses.enumerated() {
                if let status = response.status, !(100...599).contains(status) {
                    throw MockScenarioError(message: "rule \(index) response \(position): status \(status) is not an HTTP status")
                }
                if let cut = response.cutAfterChunks, cut < 0 {
                    throw MockScenarioError(message: "rule \(index) response \(position): cutAfterChunks must be 0 or more")
                }
            }
            if let per = rule.sequencePer, per != "rule", per != "prompt" {
                throw MockScenarioError(message: "rule \(index): sequencePer must be \"rule\" or \"prompt\"")
            }
            for (position, response) in rule.responses.enumerated() {
                if let low = response.delayMs, let high = response.delayMsMax, high < low {
                    throw MockScenarioError(message: "rule \(index) response \(position): delayMsMax is below delayMs")
                }
                if let low = response.usage?.outputTokens, let high = response.usage?.outputTokensMax, high < low {
                    throw MockScenarioError(
                        message: "rule \(index) response \(position): usage.outputTokensMax is below usage.outputTokens")
                }
            }
        }
        for (index, limit) in (limits ?? []).enumerated() {
            let values = [
                ("requestsPerMinute", limit.requestsPerMinute), ("tokensPerMinute", limit.tokensPerMinute),
                ("inputTokensPerMinute", limit.inputTokensPerMinute), ("outputTokensPerMinute", limit.outputTokensPerMinute),
                ("maxConcurrent", limit.maxConcurrent)
            ]
            if values.allSatisfy({ $0.1 == nil }) {
                throw MockScenarioError(message: "limits \(index) sets no limit")
            }
            for (name, value) in values {
                if let value, value < 1 { throw MockScenarioError(message: "limits \(index): \(name) must be at least 1") }
            }
        }
    }

    /// Parses and checks a scenario; the message says what is wrong.
    public static func decode(_ data: Data, source: String) throws -> MockScenario {
        let scenario: MockScenario
        do {
            scenario = try JSONDecoder().decode(MockScenario.self, from: data)
        } catch {
            throw MockScenarioError(message: "\(source): not a mock scenario: \(error)")
        }
        do { try scenario.validate() } catch let error as MockScenarioError {
            throw MockScenarioError(message: "\(source): \(error.message)")
        }
        return scenario
    }
}

/// Rate limits the mock enforces, as a provider would, on the requests `match` selects (all
/// when it is absent). Requests and tokens refill continuously to their per-minute limit; a
/// request is charged its input tokens plus the output it is answered with.
///
/// ```json
/// {"limits": [{"match": {"pathPrefix": "/primary"}, "requestsPerMinute": 600, "tokensPerMinute": 100000}]}
/// ```
public struct MockLimits: Codable, Sendable, Hashable {
    public var match: MockMatch?
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var inputTokensPerMinute: Int?
    public var outputTokensPerMinute: Int?
    /// Requests answered at once; one more is refused with a 429.
    public var maxConcurrent: Int?
    /// Put before every rate-limit header (`retry-after` included), as a gateway passes on its
    /// upstream's: `llm_provider-` imitates LiteLLM.
    public var headerPrefix: String?

    public init(
        match: MockMatch? = nil, requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil,
        inputTokensPerMinute: Int? = nil, outputTokensPerMinute: Int? = nil, maxConcurrent: Int? = nil,
        headerPrefix: String? = nil
    ) {
        self.match = match
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.inputTokensPerMinute = inputTokensPerMinute
        self.outputTokensPerMinute = outputTokensPerMinute
        self.maxConcurrent = maxConcurrent
        self.headerPrefix = headerPrefix
    }
}

/// Which requests a rule applies to; every field set must match.
public struct MockMatch: Codable, Sendable, Hashable {
    /// The model the request names.
    public var model: String?
    /// A substring of the prompt (system and messages).
    public var promptContains: String?
    /// `anthropic` or `openai`.
    public var api: String?
    /// A prefix of the request path (`/primary` when providers are told apart by base URL).
    public var pathPrefix: String?

    public init(model: String? = nil, promptContains: String? = nil, api: String? = nil, pathPrefix: String? = nil) {
        self.model = model
        self.promptContains = promptContains
        self.api = api
        self.pathPrefix = pathPrefix
    }
}

/// A match and the responses it gives, in order.
public struct MockRule: Codable, Sendable, Hashable {
    public var match: MockMatch?
    public var responses: [MockResponse]
    /// `rule` (default): one sequence for every request the rule matches. `prompt`: a
    /// sequence per distinct prompt (each document sees 429 then 200).
    public var sequencePer: String?

    public init(match: MockMatch? = nil, responses: [MockResponse], sequencePer: String? = nil) {
        self.match = match
        self.responses = responses
        self.sequencePer = sequencePer
    }
}

/// One response.
public struct MockResponse: Codable, Sendable, Hashable {
    /// HTTP status (200).
    public var status: Int?
    /// Extra headers, such as `Retry-After`.
    public var headers: [String: String]?
    /// The answer text of a 200.
    public var text: String?
    /// An error message for a non-200 (each API's error format), or a raw body to send as is.
    public var message: String?
    public var body: String?
    /// Wait this long before answering, milliseconds.
    public var delayMs: Int?
    /// With `delayMs`: wait a uniformly random time between the two, milliseconds.
    public var delayMsMax: Int?
    /// Never answer (the connection stays open).
    public var hang: Bool?
    /// Streaming: send this many chunks, then cut the connection.
    public var cutAfterChunks: Int?
    /// Streaming: stop sending after this many chunks but keep the connection open.
    public var stallAfterChunks: Int?
    /// Streaming: pause between chunks, milliseconds.
    public var chunkDelayMs: Int?
    /// Usage to report; by default estimated from characters (4 per token).
    public var usage: MockUsage?

    public init(
        status: Int? = nil, headers: [String: String]? = nil, text: String? = nil, message: String? = nil,
        body: String? = nil, delayMs: Int? = nil, delayMsMax: Int? = nil, hang: Bool? = nil, cutAfterChunks: Int? = nil,
        stallAfterChunks: Int? = nil, chunkDelayMs: Int? = nil, usage: MockUsage? = nil
    ) {
        self.status = status
        self.headers = headers
        self.text = text
        self.message = message
        self.body = body
        self.delayMs = delayMs
        self.delayMsMax = delayMsMax
        self.hang = hang
        self.cutAfterChunks = cutAfterChunks
        self.stallAfterChunks = stallAfterChunks
        self.chunkDelayMs = chunkDelayMs
        self.usage = usage
    }
}

public struct MockUsage: Codable, Sendable, Hashable {
    public var inputTokens: Int?
    public var outputTokens: Int?
    /// With `outputTokens`: report a uniformly random count between the two.
    public var outputTokensMax: Int?

    public init(inputTokens: Int? = nil, outputTokens: Int? = nil, outputTokensMax: Int? = nil) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.outputTokensMax = outputTokensMax
    }
}

/// One request the mock received (`GET /_mock/requests`).
public struct MockRequestRecord: Codable, Sendable, Hashable {
    /// When it arrived (seconds since 1970 in JSON).
    public var time: Date
    public var api: String
    public var path: String
    public var model: String
    public var stream: Bool
    /// FNV-1a digest of the prompt, hex.
    public var promptDigest: String
    /// The prompt's first 120 characters.
    public var promptPreview: String
    /// The status answered (0 for a hang).
    public var status: Int
    /// Which rule answered (nil: the default answer) and which of its responses.
    public var rule: Int?
    public var response: Int?
    /// Set when a `limits` entry refused the request (answered 429).
    public var rateLimited: Bool?
    /// The usage a 200 reported.
    public var inputTokens: Int?
    public var outputTokens: Int?
    /// Set when the client closed the connection before the answer was complete.
    public var closedEarly: Bool?
    /// When the client closed it (seconds since 1970 in JSON).
    public var closedAt: Date?
}

public struct MockScenarioError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
