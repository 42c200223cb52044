import Foundation
import KeelCore

/// What one LLM call is expected to take from its provider before it is sent: one request, the
/// prompt's tokens (4 characters each) and its output cap.
struct CallDemand: Sendable, Hashable {
    var inputTokens: Int64
    var outputTokens: Int64

    static let activityType = "llm.complete"

    func amount(_ kind: CapacityKind) -> Double {
        switch kind {
        case .requests, .concurrent: return 1
        case .tokens: return Double(inputTokens + outputTokens)
        case .inputTokens: return Double(inputTokens)
        case .outputTokens: return Double(outputTokens)
        }
    }

    /// The part of an `llm.complete` input the estimate needs (its wire form, docs/llm.md).
    struct Request: Decodable, Sendable {
        struct Message: Decodable, Sendable { var content: String? }
        var messages: [Message]?
        var system: String?
        var maxTokens: Int?
        var providers: [String]?

        var characters: Int { (system?.count ?? 0) + (messages ?? []).reduce(0) { $0 + ($1.content?.count ?? 0) } }
    }

    static func request(in input: Payload) -> Request? { try? JSONDecoder().decode(Request.self, from: input.data) }

    /// The demand of `request` sent to a provider whose output cap is `defaultMaxTokens`.
    init(_ request: Request?, defaultMaxTokens: Int) {
        inputTokens = Int64(((request?.characters ?? 0) + 3) / 4)
        outputTokens = Int64(request?.maxTokens ?? defaultMaxTokens)
    }

    init(inputTokens: Int64, outputTokens: Int64) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }
}
