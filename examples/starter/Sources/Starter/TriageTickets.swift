import Keel

/// Labels support tickets with an LLM and pages on-call for the urgent ones.
public struct TriageTickets: Workflow {
    public static let name = "triage-tickets"
    public init() {}

    public func run(context: WorkflowContext, input: [String]) async throws -> [String: String] {
        var labels: [String: String] = [:]
        for ticket in input {
            let answer = try await context.llm(LLMRequest(prompt: "Answer urgent or routine. Ticket: \(ticket)"))
            let label = answer.text.lowercased().contains("urgent") ? "urgent" : "routine"
            if label == "urgent" {
                _ = try await context.execute(
                    PageOnCall.self, input: ticket,
                    options: ActivityOptions(startToCloseTimeout: .seconds(30), retryPolicy: RetryPolicy(maximumAttempts: 5)))
            }
            labels[ticket] = label
        }
        return labels
    }
}

/// A side effect: here a stand-in; send `context.idempotencyKey` with the real call.
public struct PageOnCall: Activity {
    public static let name = "page-on-call"
    public init() {}

    public func run(context: ActivityContext, input: String) async throws -> String {
        "paged on-call about: \(input) (key \(context.idempotencyKey))"
    }
}

/// What the coordinator runs and what the workers serve.
public enum Starter {
    public static var workflows: WorkflowRegistry {
        var registry = WorkflowRegistry()
        registry.register(TriageTickets.self)
        return registry
    }

    /// `configuration.llm`: the providers of the worker's `keel.yaml` (or `KEEL_LLM_*`).
    public static func activities(configuration: KeelConfiguration) -> ActivityRegistry {
        var registry = ActivityRegistry()
        registry.register(PageOnCall())
        registry.register(LLMCompleteActivity(client: LLMClient(configuration: configuration.llm)))
        return registry
    }
}
