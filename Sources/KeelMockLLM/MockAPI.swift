import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The two wire formats the mock speaks.
enum MockAPI: String, Sendable {
    case anthropic, openai

    static func defaultMessage(_ status: Int) -> String {
        switch status {
        case 400: return "invalid request"
        case 401: return "invalid x-api-key"
        case 403: return "permission denied"
        case 404: return "model not found"
        case 413: return "request too large"
        case 422: return "the request was rejected by the content policy"
        case 429: return "rate limit exceeded"
        case 529: return "Overloaded"
        case 500...599: return "internal server error"
        default: return "error \(status)"
        }
    }

    private static func anthropicErrorType(_ status: Int) -> String {
        switch status {
        case 400, 422: return "invalid_request_error"
        case 401: return "authentication_error"
        case 403: return "permission_error"
        case 404: return "not_found_error"
        case 413: return "request_too_large"
        case 429: return "rate_limit_error"
        case 529: return "overloaded_error"
        default: return "api_error"
        }
    }

    func fields(_ headers: [String: String], contentType: String) -> HTTPFields {
        var fields = HTTPFields()
        fields[.contentType] = contentType
        for (name, value) in headers {
            if let field = HTTPField.Name(name) { fields[field] = value }
        }
        return fields
    }

    private func json(_ object: Any) -> ByteBuffer {
        ByteBuffer(data: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    func error(status: Int, message: String, headers: [String: String]) -> Response {
        let body: [String: Any]
        switch self {
        case .anthropic:
            body = ["type": "error", "error": ["type": Self.anthropicErrorType(status), "message": message]]
        case .openai:
            body = [
                "error": [
                    "message": message, "type": status == 429 ? "rate_limit_exceeded" : "invalid_request_error", "code": status
                ]
            ]
        }
        return Response(
            status: .init(code: status), headers: fields(headers, contentType: "application/json"),
            body: ResponseBody(byteBuffer: json(body)))
    }

    func message(text: String, model: String, usage: (input: Int, output: Int), headers: [String: String]) -> Response {
        let body: [String: Any]
        switch self {
        case .anthropic:
            body = [
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [["type": "text", "text": text]], "stop_reason": "end_turn",
                "usage": ["input_tokens": usage.input, "output_tokens": usage.output]
            ]
        case .openai:
            body = [
                "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
                "choices": [["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop"]],
                "usage": [
                    "prompt_tokens": usage.input, "completion_tokens": usage.output, "total_tokens": usage.input + usage.output
                ]
            ]
        }
        return Response(
            status: .ok, headers: fields(headers, contentType: "application/json"), body: ResponseBody(byteBuffer: json(body)))
    }

    /// The answer as server-sent events, a chunk per word; cut or stalled if the response says so.
    /// `onEnd` runs when the stream ends, told whether it was sent whole (before the last write).
    func stream(
        text: String, model: String, usage: (input: Int, output: Int), response: MockResponse, headers: [String: String],
        onEnd: @escaping @Sendable (_ whole: Bool) async -> Void = { _ in }
    ) -> Response {
        let words = text.split(separator: " ", omittingEmptySubsequences: false).enumerated().map { index, word in
            index == 0 ? String(word) : " " + word
        }
        let opening: [String]
        let closing: [String]
        let delta: (String) -> String
        switch self {
        case .anthropic:
            opening = [
                event(
                    "message_start",
                    [
                        "type": "message_start",
                        "message": [
                            "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                            "usage": ["input_tokens": usage.input, "output_tokens": 1]
                        ]
                    ]),
                event(
                    "content_block_start",
                    ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]])
            ]
            delta = {
                event(
                    "content_block_delta",
                    ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": $0]])
            }
            closing = [
                event("content_block_stop", ["type": "content_block_stop", "index": 0]),
                event(
                    "message_delta",
                    ["type": "message_delta", "delta": ["stop_reason": "end_turn"], "usage": ["output_tokens": usage.output]]),
                event("message_stop", ["type": "message_stop"])
            ]
        case .openai:
            func chunk(_ choice: [String: Any]?, usage: [String: Any]? = nil) -> String {
                var object: [String: Any] = ["id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model]
                object["choices"] = choice.map { [$0] } ?? []
                if let usage { object["usage"] = usage }
                return event(nil, object)
            }
            opening = [chunk(["index": 0, "delta": ["role": "assistant", "content": ""]])]
            delta = { chunk(["index": 0, "delta": ["content": $0]]) }
            closing = [
                chunk(["index": 0, "delta": [:], "finish_reason": "stop"]),
                chunk(
                    nil,
                    usage: [
                        "prompt_tokens": usage.input, "completion_tokens": usage.output,
                        "total_tokens": usage.input + usage.output
                    ]),
                "data: [DONE]\n\n"
            ]
        }
        let deltas = words.map(delta)
        let chunkDelay = response.chunkDelayMs ?? 0
        let cut = response.cutAfterChunks
        let stall = response.stallAfterChunks
        var fields = fields(headers, contentType: "text/event-stream")
        fields[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: fields,
            body: ResponseBody { writer in
                do {
                    try await writer.write(ByteBuffer(string: opening.joined()))
                    for (index, chunk) in deltas.enumerated() {
                        if let cut, index >= cut { throw MockStreamCut() }
                        if let stall, index >= stall {
                            try? await Task.sleep(for: .seconds(3600))
                            throw MockStreamCut()
                        }
                        if chunkDelay > 0, index > 0 { try await Task.sleep(for: .milliseconds(chunkDelay)) }
                        try await writer.write(ByteBuffer(string: chunk))
                    }
                    if let cut, cut >= deltas.count { throw MockStreamCut() }
                    await onEnd(true)
                    try await writer.write(ByteBuffer(string: closing.joined()))
                    try await writer.finish(nil)
                } catch {
                    await onEnd(false)
                    throw error
                }
            })
    }

    private func event(_ name: String?, _ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return (name.map { "event: \($0)\n" } ?? "") + "data: " + String(decoding: data, as: UTF8.self) + "\n\n"
    }
}
