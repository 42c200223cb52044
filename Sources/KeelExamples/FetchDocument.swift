import Foundation
import Keel

/// Fetches a document's text over HTTP (`GET {baseURL}/documents/{id}`). A 404 is final
/// (`DocumentNotFound`); server errors and connection failures are retried.
public struct FetchDocument: Activity {
    public static let name = "documents.fetch"

    public struct Input: Codable, Sendable {
        public var baseURL: String
        public var id: String
        public init(baseURL: String, id: String) {
            self.baseURL = baseURL
            self.id = id
        }
    }

    public init() {}

    public func run(context: ActivityContext, input: Input) async throws -> String {
        let url = (input.baseURL.hasSuffix("/") ? String(input.baseURL.dropLast()) : input.baseURL) + "/documents/" + input.id
        let head: HTTPResponseHead
        let body: Data
        do {
            (head, body) = try await CurlHTTPClient().send(HTTPRequest(url: url, method: "GET", timeout: 30))
        } catch let error as HTTPTransportError {
            throw ApplicationError(message: "GET \(url): \(error.message)", type: "DocumentUnavailable")
        }
        switch head.status {
        case 200..<300:
            return String(decoding: body, as: UTF8.self)
        case 404, 410:
            throw ApplicationError(message: "no document \(input.id) at \(url)", type: "DocumentNotFound", isNonRetryable: true)
        default:
            throw ApplicationError(
                message: "GET \(url) answered \(head.status)", type: "DocumentUnavailable",
                isNonRetryable: (400..<500).contains(head.status) && head.status != 429)
        }
    }
}
