import Foundation
import Keel

/// Fetches a document's text over HTTP (`GET {baseURL}/documents/{id}`, or `url` as given);
/// PDFs are turned into text with `pdftotext` (Debian: poppler-utils). A 404 is final
/// (`DocumentNotFound`); server errors and connection failures are retried.
public struct FetchDocument: Activity {
    public static let name = "documents.fetch"

    public struct Input: Codable, Sendable {
        public var baseURL: String?
        public var id: String?
        /// The document's full URL, instead of `baseURL` and `id`.
        public var url: String?

        public init(baseURL: String, id: String) {
            self.baseURL = baseURL
            self.id = id
        }

        public init(url: String) { self.url = url }

        var resolved: String? {
            if let url { return url }
            guard let baseURL, let id else { return nil }
            return ServiceCall.url(baseURL, "/documents/" + id)
        }
    }

    public init() {}

    public func run(context: ActivityContext, input: Input) async throws -> String {
        guard let url = input.resolved else {
            throw ApplicationError(message: "give url, or baseURL and id", type: "InvalidInput", isNonRetryable: true)
        }
        let head: HTTPResponseHead
        let body: Data
        do {
            (head, body) = try await CurlHTTPClient().send(HTTPRequest(url: url, method: "GET", timeout: 30))
        } catch let error as HTTPTransportError {
            throw ApplicationError(message: "GET \(url): \(error.message)", type: "DocumentUnavailable")
        }
        switch head.status {
        case 200..<300:
            if head.headers["content-type"]?.hasPrefix("application/pdf") == true || body.starts(with: Data("%PDF-".utf8)) {
                return try await Self.pdfText(body, source: url)
            }
            return String(decoding: body, as: UTF8.self)
        case 404, 410:
            throw ApplicationError(message: "no document at \(url)", type: "DocumentNotFound", isNonRetryable: true)
        default:
            throw ApplicationError(
                message: "GET \(url) answered \(head.status)", type: "DocumentUnavailable",
                isNonRetryable: (400..<500).contains(head.status) && head.status != 429)
        }
    }

    /// The text of a PDF, by `pdftotext -layout` on a temporary file (off the cooperative pool).
    static func pdfText(_ pdf: Data, source: String) async throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("keel-\(UUID().uuidString).pdf")
        try pdf.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result: Result<String, ApplicationError> = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let process = Process()
                let output = Pipe()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = ["pdftotext", "-layout", file.path, "-"]
                process.standardOutput = output
                process.standardError = FileHandle.nullDevice
                do {
                    try startWithSignalsUnblocked(process)
                } catch {
                    continuation.resume(
                        returning: .failure(
                            ApplicationError(
                                message: "cannot run pdftotext (apt-get install poppler-utils): \(error)", type: "PDFToolMissing",
                                isNonRetryable: true)))
                    return
                }
                let text = readToEnd(output.fileHandleForReading)
                while process.isRunning { Thread.sleep(forTimeInterval: 0.005) }
                guard process.terminationStatus == 0 else {
                    continuation.resume(
                        returning: .failure(
                            ApplicationError(
                                message: "pdftotext could not read the PDF from \(source) (exit \(process.terminationStatus))",
                                type: "DocumentUnreadable", isNonRetryable: true)))
                    return
                }
                continuation.resume(returning: .success(String(decoding: text, as: UTF8.self)))
            }
        }
        return try result.get()
    }
}
