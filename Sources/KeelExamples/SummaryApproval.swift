import Foundation
import Keel

/// Human in the loop: an LLM writes a summary, then the workflow waits (durably, for days if need
/// be) for an `approve` or `reject` signal, or gives up after the timeout. The `status` query
/// answers at every stage.
///
/// ```
/// keel start summary-approval --id review-7 --input '{"text": "…", "approvalTimeoutSeconds": 86400}'
/// keel query review-7 status
/// keel signal review-7 approve --input '{"by": "ana"}'
/// ```
public struct SummaryApproval: Workflow {
    public static let name = "summary-approval"

    public struct Input: Codable, Sendable {
        public var text: String
        /// How long to wait for a decision (one day).
        public var approvalTimeoutSeconds: Double?
        public init(text: String, approvalTimeoutSeconds: Double? = nil) {
            self.text = text
            self.approvalTimeoutSeconds = approvalTimeoutSeconds
        }
    }

    /// What `approve` and `reject` carry.
    public struct Decision: Codable, Sendable {
        public var by: String
        public var comment: String?
        public init(by: String, comment: String? = nil) {
            self.by = by
            self.comment = comment
        }
    }

    public struct Status: Codable, Sendable, Hashable {
        /// `summarising`, `awaiting approval`, `approved`, `rejected` or `timed out`.
        public var stage: String
        public var summary: String?
        public var decidedBy: String?

        public init(stage: String, summary: String? = nil, decidedBy: String? = nil) {
            self.stage = stage
            self.summary = summary
            self.decidedBy = decidedBy
        }
    }

    public typealias Output = Status

    final class State {
        var status = Status(stage: "summarising")
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Status {
        let state = State()
        context.onQuery("status") { state.status }
        var decision: (approved: Bool, by: Decision)?
        context.onSignal("approve", as: Decision.self) { if decision == nil { decision = (true, $0) } }
        context.onSignal("reject", as: Decision.self) { if decision == nil { decision = (false, $0) } }

        let summary = try await context.llm(LLMRequest(prompt: "[summary] Summarise for approval:\n\n" + input.text))
        state.status = Status(stage: "awaiting approval", summary: summary.text)
        let decided = try await context.condition(timeout: .seconds(double: input.approvalTimeoutSeconds ?? 86_400)) {
            decision != nil
        }
        if decided, let decision {
            state.status = Status(
                stage: decision.approved ? "approved" : "rejected", summary: summary.text, decidedBy: decision.by.by)
        } else {
            state.status = Status(stage: "timed out", summary: summary.text)
        }
        return state.status
    }
}
