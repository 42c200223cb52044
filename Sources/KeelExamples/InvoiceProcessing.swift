import Foundation
import Keel

/// Reads an invoice (PDF or text) from a URL, has an LLM extract its fields as JSON, checks
/// them, and posts a bill to the accounting system with an idempotency key: a retry after a
/// lost response never creates a second bill. Start it under ``workflowId(for:)``, derived from
/// the document URL, so a webhook that fires twice makes one run.
///
/// ```
/// keel start invoice --id invoice-http-127-0-0-1-8090-documents-invoice-1001 --wait \
///     --input '{"documentURL": "http://127.0.0.1:8090/documents/invoice-1001", "accountingURL": "http://127.0.0.1:8090"}'
/// ```
public struct InvoiceProcessing: Workflow {
    public static let name = "invoice"

    public struct Input: Codable, Sendable {
        public var documentURL: String
        public var accountingURL: String
        public init(documentURL: String, accountingURL: String) {
            self.documentURL = documentURL
            self.accountingURL = accountingURL
        }
    }

    /// The fields the model must return.
    public struct Invoice: Codable, Sendable, Hashable {
        public var vendor: String
        public var invoiceNumber: String
        public var total: Double
        public var currency: String
        public var dueDate: String?
    }

    public struct Output: Codable, Sendable {
        public var invoice: Invoice
        public var billId: String
    }

    /// The workflow id for a document: `invoice-` and the URL with every run of other
    /// characters than letters and digits turned into one `-`. Any script can compute it.
    public static func workflowId(for documentURL: String) -> String {
        var id = "invoice-"
        var dash = false
        for character in documentURL.lowercased() {
            if character.isASCII && (character.isLetter || character.isNumber) {
                id.append(character)
                dash = false
            } else if !dash {
                id.append("-")
                dash = true
            }
        }
        return id.hasSuffix("-") ? String(id.dropLast()) : id
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Output {
        let text = try await context.execute(
            FetchDocument.self, input: .init(url: input.documentURL),
            options: ActivityOptions(
                startToCloseTimeout: .seconds(60),
                retryPolicy: RetryPolicy(
                    maximumAttempts: 5, nonRetryableErrorTypes: ["DocumentNotFound", "DocumentUnreadable", "PDFToolMissing"])))
        let answer = try await context.llm(
            LLMRequest(
                prompt: "[invoice] Extract the invoice's vendor, invoiceNumber, total (a number), currency (ISO code) "
                    + "and dueDate (YYYY-MM-DD) as one JSON object with exactly those keys.\n\n" + text,
                system: "Answer with one JSON object and nothing else."))
        let invoice = try Self.parse(answer.text)
        let bill = try await context.execute(
            PostBill.self, input: .init(accountingURL: input.accountingURL, invoice: invoice),
            options: ActivityOptions(
                startToCloseTimeout: .seconds(30), scheduleToCloseTimeout: .seconds(600),
                retryPolicy: RetryPolicy(
                    initialInterval: .seconds(1), maximumAttempts: 8, nonRetryableErrorTypes: ["ServiceRejected"])))
        return Output(invoice: invoice, billId: bill)
    }

    /// The model's answer as an ``Invoice``: the first JSON object in it (code fences allowed),
    /// with a vendor, a number and a positive total. Anything else is `LLMInvalidOutput`, which
    /// is never retried.
    public static func parse(_ text: String) throws -> Invoice {
        func invalid(_ reason: String) -> ApplicationError {
            ApplicationError(
                message: "the model's invoice is not usable: \(reason): \(text.prefix(200))", type: "LLMInvalidOutput",
                isNonRetryable: true)
        }
        guard let start = text.firstIndex(of: "{"), let end = text.lastIndex(of: "}"), start < end else {
            throw invalid("no JSON object")
        }
        let invoice: Invoice
        do {
            invoice = try JSONDecoder().decode(Invoice.self, from: Data(text[start...end].utf8))
        } catch {
            throw invalid("\(error)")
        }
        if invoice.vendor.isEmpty || invoice.invoiceNumber.isEmpty { throw invalid("vendor or invoiceNumber is empty") }
        if !(invoice.total > 0) { throw invalid("total must be positive") }
        return invoice
    }
}

/// Posts a bill; the attempt's idempotency key (stable across retries and replays of this step)
/// goes in the `Idempotency-Key` header. Returns the bill's id.
public struct PostBill: Activity {
    public static let name = "accounting.post-bill"

    public struct Input: Codable, Sendable {
        public var accountingURL: String
        public var invoice: InvoiceProcessing.Invoice
    }

    public init() {}

    public func run(context: ActivityContext, input: Input) async throws -> String {
        let data = try await ServiceCall.post(
            ServiceCall.url(input.accountingURL, "/accounting/bills"), json: input.invoice,
            idempotencyKey: context.idempotencyKey)
        struct Bill: Decodable { var id: String }
        guard let bill = try? JSONDecoder().decode(Bill.self, from: data) else {
            throw ApplicationError(message: "the accounting system answered without a bill id", type: "ServiceUnavailable")
        }
        return bill.id
    }
}
