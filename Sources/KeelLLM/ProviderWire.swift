import Foundation

/// A provider's answer, parsed.
struct Completion: Sendable {
    var text: String
    var inputTokens: Int64?
    var outputTokens: Int64?
    var finishReason: String?
    var model: String?
}

/// What a stream has delivered so far.
struct StreamProgress: Sendable {
    var text = ""
    var inputTokens: Int64?
    var outputTokens: Int64?
    var finishReason: String?
    var model: String?
    /// The provider sent its end-of-stream marker.
    var finished = false
    /// The provider reported an error inside the stream (`event: error`).
    var error: (kind: LLMErrorKind, message: String)?
    var chunks = 0

    var completion: Completion {
        Completion(text: text, inputTokens: inputTokens, outputTokens: outputTokens, finishReason: finishReason, model: model)
    }
}

/// How one provider API is spoken: the request it takes, the answer and stream it gives.
protocol ProviderWire: Sendable {
    func httpRequest(for request: LLMRequest, provider: LLMProviderConfiguration, apiKey: String?) throws -> HTTPRequest
    func parseResponse(_ body: Data) throws -> Completion
    func consume(_ event: ServerSentEvent, into progress: inout StreamProgress)
}

extension LLMProviderConfiguration.API {
    var wire: any ProviderWire {
        switch self {
        case .anthropic: return AnthropicWire()
        case .openai: return OpenAIWire()
        }
    }
}

private func encodeJSON(_ object: [String: Any]) throws -> Data {
    try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
}

private func joinURL(_ base: String, _ path: String) -> String {
    (base.hasSuffix("/") ? String(base.dropLast()) : base) + path
}

private func decodeObject(_ data: Data) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
}

private func int64(_ value: Any?) -> Int64? {
    (value as? NSNumber)?.int64Value
}

/// Anthropic Messages API.
struct AnthropicWire: ProviderWire {
    func httpRequest(for request: LLMRequest, provider: LLMProviderConfiguration, apiKey: String?) throws -> HTTPRequest {
        var body: [String: Any] = [
            "model": provider.model,
            "max_tokens": request.maxTokens ?? provider.maxTokens ?? 1024,
            "messages": request.messages.map { ["role": $0.role, "content": $0.content] }
        ]
        if let system = request.system { body["system"] = system }
        if let temperature = request.temperature { body["temperature"] = temperature }
        if request.isStreaming { body["stream"] = true }
        var headers: [(name: String, value: String)] = [
            ("content-type", "application/json"), ("anthropic-version", "2023-06-01")
        ]
        if let apiKey { headers.append(("x-api-key", apiKey)) }
        return HTTPRequest(
            url: joinURL(provider.baseURL, "/v1/messages"), headers: headers, body: try encodeJSON(body),
            timeout: provider.timeout ?? 120, idleTimeout: provider.idleTimeout ?? 30)
    }

    func parseResponse(_ body: Data) throws -> Completion {
        guard let object = decodeObject(body), let content = object["content"] as? [[String: Any]] else {
            throw LLMError(.invalidResponse, "the answer is not an Anthropic message")
        }
        let usage = object["usage"] as? [String: Any]
        return Completion(
            text: content.compactMap { $0["type"] as? String == "text" ? $0["text"] as? String : nil }.joined(),
            inputTokens: int64(usage?["input_tokens"]), outputTokens: int64(usage?["output_tokens"]),
            finishReason: object["stop_reason"] as? String, model: object["model"] as? String)
    }

    func consume(_ event: ServerSentEvent, into progress: inout StreamProgress) {
        guard let object = decodeObject(Data(event.data.utf8)) else { return }
        switch (event.event ?? object["type"] as? String) ?? "" {
        case "message_start":
            let message = object["message"] as? [String: Any]
            let usage = message?["usage"] as? [String: Any]
            // Its output_tokens is a placeholder (1): the count comes with message_delta, and a
            // stream cut before that has its output estimated.
            progress.inputTokens = int64(usage?["input_tokens"]) ?? progress.inputTokens
            progress.model = message?["model"] as? String
        case "content_block_delta":
            if let delta = object["delta"] as? [String: Any], let text = delta["text"] as? String, !text.isEmpty {
                progress.text += text
                progress.chunks += 1
            }
        case "message_delta":
            if let usage = object["usage"] as? [String: Any] {
                progress.outputTokens = int64(usage["output_tokens"]) ?? progress.outputTokens
                progress.inputTokens = int64(usage["input_tokens"]) ?? progress.inputTokens
            }
            if let delta = object["delta"] as? [String: Any], let reason = delta["stop_reason"] as? String {
                progress.finishReason = reason
            }
        case "message_stop":
            progress.finished = true
        case "error":
            let error = object["error"] as? [String: Any]
            let type = error?["type"] as? String ?? "error"
            let message = error?["message"] as? String ?? "error event in the stream"
            let kind: LLMErrorKind
            switch type {
            case "overloaded_error": kind = .overloaded
            case "rate_limit_error": kind = .rateLimited
            case "invalid_request_error": kind = .badRequest
            case "api_error": kind = .serverError
            default: kind = .serverError
            }
            progress.error = (kind, "\(type): \(message)")
        default:
            break
        }
    }
}

/// OpenAI-compatible Chat Completions.
struct OpenAIWire: ProviderWire {
    func httpRequest(for request: LLMRequest, provider: LLMProviderConfiguration, apiKey: String?) throws -> HTTPRequest {
        var messages: [[String: Any]] = []
        if let system = request.system { messages.append(["role": "system", "content": system]) }
        messages += request.messages.map { ["role": $0.role, "content": $0.content] }
        var body: [String: Any] = [
            "model": provider.model,
            "max_tokens": request.maxTokens ?? provider.maxTokens ?? 1024,
            "messages": messages
        ]
        if let temperature = request.temperature { body["temperature"] = temperature }
        if request.isStreaming {
            body["stream"] = true
            body["stream_options"] = ["include_usage": true]
        }
        var headers: [(name: String, value: String)] = [("content-type", "application/json")]
        if let apiKey { headers.append(("authorization", "Bearer \(apiKey)")) }
        return HTTPRequest(
            url: joinURL(provider.baseURL, "/chat/completions"), headers: headers, body: try encodeJSON(body),
            timeout: provider.timeout ?? 120, idleTimeout: provider.idleTimeout ?? 30)
    }

    func parseResponse(_ body: Data) throws -> Completion {
        guard let object = decodeObject(body), let choices = object["choices"] as? [[String: Any]],
            let first = choices.first
        else {
            throw LLMError(.invalidResponse, "the answer is not a chat completion")
        }
        let message = first["message"] as? [String: Any]
        let usage = object["usage"] as? [String: Any]
        return Completion(
            text: message?["content"] as? String ?? "", inputTokens: int64(usage?["prompt_tokens"]),
            outputTokens: int64(usage?["completion_tokens"]), finishReason: first["finish_reason"] as? String,
            model: object["model"] as? String)
    }

    func consume(_ event: ServerSentEvent, into progress: inout StreamProgress) {
        if event.data == "[DONE]" {
            progress.finished = true
            return
        }
        guard let object = decodeObject(Data(event.data.utf8)) else { return }
        if let error = object["error"] as? [String: Any] {
            progress.error = (.serverError, error["message"] as? String ?? "error in the stream")
            return
        }
        progress.model = object["model"] as? String ?? progress.model
        if let usage = object["usage"] as? [String: Any] {
            progress.inputTokens = int64(usage["prompt_tokens"]) ?? progress.inputTokens
            progress.outputTokens = int64(usage["completion_tokens"]) ?? progress.outputTokens
        }
        guard let choice = (object["choices"] as? [[String: Any]])?.first else { return }
        if let delta = choice["delta"] as? [String: Any], let text = delta["content"] as? String, !text.isEmpty {
            progress.text += text
            progress.chunks += 1
        }
        if let reason = choice["finish_reason"] as? String { progress.finishReason = reason }
    }
}
