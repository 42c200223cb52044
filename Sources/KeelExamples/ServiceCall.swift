import Foundation
import Keel

/// POSTs JSON to a business endpoint with an `Idempotency-Key`, so that a retry after a lost
/// response does not act twice. 2xx returns the body; 409 and other 4xx are final
/// (`ServiceRejected`); 5xx, 429 and transport failures are retried (`ServiceUnavailable`).
enum ServiceCall {
    static func post(_ url: String, json body: some Encodable, idempotencyKey: String?) async throws -> Data {
        var headers: [(name: String, value: String)] = [("content-type", "application/json")]
        if let idempotencyKey { headers.append(("idempotency-key", idempotencyKey)) }
        let request = HTTPRequest(url: url, headers: headers, body: try JSONEncoder().encode(body), timeout: 30)
        let head: HTTPResponseHead
        let data: Data
        do {
            (head, data) = try await CurlHTTPClient().send(request)
        } catch let error as HTTPTransportError {
            throw ApplicationError(message: "POST \(url): \(error.message)", type: "ServiceUnavailable")
        }
        switch head.status {
        case 200..<300:
            return data
        case 429, 500...599:
            throw ApplicationError(message: "POST \(url) answered \(head.status)", type: "ServiceUnavailable")
        default:
            throw ApplicationError(
                message: "POST \(url) answered \(head.status): \(String(decoding: data.prefix(300), as: UTF8.self))",
                type: "ServiceRejected", isNonRetryable: true)
        }
    }

    /// `base` + `path` without a doubled slash.
    static func url(_ base: String, _ path: String) -> String {
        (base.hasSuffix("/") ? String(base.dropLast()) : base) + path
    }
}
