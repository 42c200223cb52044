import Foundation

/// Runs that cost far more than usual for their workflow type: more than `factor` times the
/// median cost of the runs of that type that cost anything.
public enum CostOutliers {
    /// The median cost per workflow type, over runs with a cost.
    public static func medians(_ runs: [RunRecord]) -> [String: Double] {
        Dictionary(grouping: runs.filter { $0.costUSD > 0 }, by: \.workflowType).mapValues { group in
            let costs = group.map(\.costUSD).sorted()
            let middle = costs.count / 2
            return costs.count % 2 == 1 ? costs[middle] : (costs[middle - 1] + costs[middle]) / 2
        }
    }

    /// Run id → its cost as a multiple of its type's median, for runs above `factor` times it.
    public static func flagged(_ runs: [RunRecord], factor: Double = 3) -> [String: Double] {
        let medians = medians(runs)
        var flagged: [String: Double] = [:]
        for run in runs where run.costUSD > 0 {
            guard let median = medians[run.workflowType], median > 0 else { continue }
            let ratio = run.costUSD / median
            if ratio > factor { flagged[run.runId] = ratio }
        }
        return flagged
    }
}
