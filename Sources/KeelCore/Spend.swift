import Foundation

/// Tokens and money an activity attempt, or a whole run, consumed.
///
/// Activities report spend under a `usage` key: in their JSON result
/// (`{"usage": {"inputTokens": 812, "outputTokens": 95, "costUSD": 0.0038}, …}`) or, for a failed
/// attempt that still consumed tokens, in the failure's `details`. The engine adds up every
/// attempt's usage into the run (`keel show`, `keel list`) and into ``WorkflowContext/budget``.
public struct Spend: Codable, Sendable, Hashable {
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var costUSD: Double

    public init(inputTokens: Int64 = 0, outputTokens: Int64 = 0, costUSD: Double = 0) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.costUSD = costUSD
    }

    public static let zero = Spend()

    public var totalTokens: Int64 { inputTokens + outputTokens }
    public var isZero: Bool { inputTokens == 0 && outputTokens == 0 && costUSD == 0 }

    public static func + (lhs: Spend, rhs: Spend) -> Spend {
        Spend(
            inputTokens: lhs.inputTokens + rhs.inputTokens, outputTokens: lhs.outputTokens + rhs.outputTokens,
            costUSD: lhs.costUSD + rhs.costUSD)
    }

    public static func += (lhs: inout Spend, rhs: Spend) { lhs = lhs + rhs }

    public static func - (lhs: Spend, rhs: Spend) -> Spend {
        Spend(
            inputTokens: lhs.inputTokens - rhs.inputTokens, outputTokens: lhs.outputTokens - rhs.outputTokens,
            costUSD: lhs.costUSD - rhs.costUSD)
    }

    enum CodingKeys: String, CodingKey { case inputTokens, outputTokens, costUSD }

    // Every field is optional on the wire, so a worker reports what it knows.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            inputTokens: try container.decodeIfPresent(Int64.self, forKey: .inputTokens) ?? 0,
            outputTokens: try container.decodeIfPresent(Int64.self, forKey: .outputTokens) ?? 0,
            costUSD: try container.decodeIfPresent(Double.self, forKey: .costUSD) ?? 0)
    }

    /// The usage an activity attempt event reports, if any: the result's `usage` for a
    /// completion, the failure details' `usage` for a failed, timed-out or parked attempt (not for
    /// the failure a discard hands over, which was counted when the activity parked).
    public static func reported(by event: HistoryEvent) -> Spend? {
        event.attemptReport.flatMap(reported(in:))
    }

    /// What `event` adds to its run's spend (and the workflow's ``Budget``): an attempt's usage,
    /// the spend a continued run carries over (`workflowStarted`), a closed child's spend
    /// (`childWorkflowCompleted`/`Failed`), which its parent is charged.
    public static func charged(by event: HistoryEvent) -> Spend? {
        switch event.kind {
        case .workflowStarted:
            // Only a continued run carries spend: the others skip decoding their attributes
            // (1.8 % of the coordinator's CPU in `bench throughput`, one decode per start).
            guard let attributes = event.attributes, attributes.mentions(carriedSpendKey) else { return nil }
            return (try? attributes.decode(WorkflowStartedAttributes.self))?.carriedSpend.flatMap { $0.isZero ? nil : $0 }
        case .childWorkflowCompleted, .childWorkflowFailed:
            return (try? event.attributes?.decode(ChildClosedAttributes.self))?.spend
        default:
            return reported(by: event)
        }
    }

    private static let usageKey = Payload.quotedKey("usage")
    private static let carriedSpendKey = Payload.quotedKey("carriedSpend")

    /// The `usage` object of a JSON object payload, if it has one.
    public static func reported(in payload: Payload) -> Spend? {
        // Most results carry no usage: skip the decode for them.
        guard payload.mentions(usageKey) else { return nil }
        struct Carrier: Decodable { var usage: Spend? }
        guard let spend = (try? JSONDecoder().decode(Carrier.self, from: payload.data))?.usage, !spend.isZero
        else { return nil }
        return spend
    }
}

/// What a child's closing event tells its parent beside the outcome.
public struct ChildClosedAttributes: Codable, Sendable, Hashable {
    /// What the child (with its own children) spent: its parent is charged with it.
    public var spend: Spend?

    public init(spend: Spend?) { self.spend = spend }
}

/// The most a workflow run may spend. Either bound may be left out.
public struct SpendLimit: Codable, Sendable, Hashable {
    public var maxTokens: Int64?
    public var maxCostUSD: Double?

    public init(maxTokens: Int64? = nil, maxCostUSD: Double? = nil) {
        self.maxTokens = maxTokens
        self.maxCostUSD = maxCostUSD
    }

    /// Whether `spend` stays within both bounds (reaching one is within).
    public func allows(_ spend: Spend) -> Bool {
        if let maxTokens, spend.totalTokens > maxTokens { return false }
        if let maxCostUSD, spend.costUSD > maxCostUSD { return false }
        return true
    }

    /// Whether `spend` has reached a bound.
    public func isExhausted(by spend: Spend) -> Bool {
        if let maxTokens, spend.totalTokens >= maxTokens { return true }
        if let maxCostUSD, spend.costUSD >= maxCostUSD { return true }
        return false
    }

    public func validate() throws {
        if let maxTokens, maxTokens <= 0 { throw InvalidOptionsError(message: "budget: maxTokens must be positive") }
        if let maxCostUSD, !(maxCostUSD > 0) {
            throw InvalidOptionsError(message: "budget: maxCostUSD must be positive")
        }
    }
}

/// A run's spend against its limit, as workflow code sees it (``WorkflowContext/budget``).
public struct Budget: Sendable, Hashable, Codable {
    public var limit: SpendLimit?
    public var spent: Spend

    public init(limit: SpendLimit?, spent: Spend) {
        self.limit = limit
        self.spent = spent
    }

    /// Tokens left, nil without a token bound.
    public var remainingTokens: Int64? { limit?.maxTokens.map { max($0 - spent.totalTokens, 0) } }
    /// Dollars left, nil without a cost bound.
    public var remainingCostUSD: Double? { limit?.maxCostUSD.map { max($0 - spent.costUSD, 0) } }
    public var isExhausted: Bool { limit?.isExhausted(by: spent) ?? false }
}

/// Thrown before an activity that counts against the budget is dispatched once the run's budget
/// is spent; nothing is sent. Non-retryable.
public struct BudgetExhaustedError: KeelError {
    public var budget: Budget
    public var activityType: String
    public init(budget: Budget, activityType: String) {
        self.budget = budget
        self.activityType = activityType
    }
    public var errorType: String { "BudgetExhausted" }
    public var isNonRetryable: Bool { true }
    public var message: String {
        var bounds: [String] = []
        if let maxTokens = budget.limit?.maxTokens { bounds.append("\(budget.spent.totalTokens)/\(maxTokens) tokens") }
        if let maxCost = budget.limit?.maxCostUSD {
            bounds.append(String(format: "$%.4f/$%.4f", budget.spent.costUSD, maxCost))
        }
        return "budget spent (\(bounds.joined(separator: ", "))): \(activityType) was not dispatched"
    }
}
