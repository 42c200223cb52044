import Foundation
import KeelCore

// A child workflow spends its parent's budget: it starts with a cap no larger than what the
// parent has left (beside what its calls in flight and other children hold), the cap is held
// against the parent until the child closes, and the child's spend is then charged to the
// parent (its closing event carries it).
extension Coordinator {
    enum ChildBudget {
        /// The child's budget (nil: none), and what it holds of its parent's.
        case capped(SpendLimit?, held: Spend?)
        case refused(Failure)
    }

    /// The budget a child of `parent` starts with: its own, lowered to what the parent has left.
    func budgetForChild(_ own: SpendLimit?, of parent: LiveRun) -> ChildBudget {
        guard let limit = parent.record.options.budget else { return .capped(own, held: nil) }
        let taken = parent.record.spend + (admission.reservedByRun[parent.runId] ?? .zero)
        let tokens = limit.maxTokens.map { $0 - taken.totalTokens }
        let cost = limit.maxCostUSD.map { $0 - taken.costUSD }
        if (tokens.map { $0 <= 0 } ?? false) || (cost.map { $0 <= 1e-12 } ?? false) {
            let error = BudgetExhaustedError(
                budget: Budget(limit: limit, spent: taken), activityType: "a child workflow (its parent's budget)")
            return .refused(Failure(error))
        }
        let capped = SpendLimit(
            maxTokens: [own?.maxTokens, tokens].compactMap { $0 }.min(),
            maxCostUSD: [own?.maxCostUSD, cost].compactMap { $0 }.min())
        return .capped(capped, held: Spend(inputTokens: capped.maxTokens ?? 0, costUSD: capped.maxCostUSD ?? 0))
    }

    func holdParentBudget(_ held: Spend, of parent: String, for child: String) {
        admission.childBudgets[child] = (parent, held)
        admission.reservedByRun[parent, default: .zero] += held
    }

    func releaseParentBudget(of child: String) {
        guard let (parent, held) = admission.childBudgets.removeValue(forKey: child),
            let reserved = admission.reservedByRun[parent]
        else { return }
        let left = reserved - held
        admission.reservedByRun[parent] = left.totalTokens <= 0 && left.costUSD <= 1e-12 ? nil : left
    }

    /// A child continued as new: its next run holds what the closed one held.
    func passParentBudget(from previous: String, to next: String) {
        if let hold = admission.childBudgets.removeValue(forKey: previous) { admission.childBudgets[next] = hold }
    }

    /// Start-up: every open child of an open parent with a budget holds its cap again.
    func holdChildBudgets() {
        for run in runs.values {
            guard admission.childBudgets[run.runId] == nil, let parentId = run.record.parentRunId, let parent = runs[parentId],
                parent.record.options.budget != nil, let cap = run.record.options.budget
            else { continue }
            holdParentBudget(
                Spend(inputTokens: cap.maxTokens ?? 0, costUSD: cap.maxCostUSD ?? 0), of: parentId, for: run.runId)
        }
    }
}
