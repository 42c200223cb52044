import Foundation

/// Runs that cost far more than usual for their workflow type: more than `factor` times the
/// median cost of the runs of that type that cost anything.
public enum CostOutliers {
    /// The median cost per workflow type, over the samples with a cost.
    public static func medians(_ samples: [(type: String, cost: Double)]) -> [String: Double] {
        Dictionary(grouping: samples.filter { $0.cost > 0 }, by: \.type).mapValues { group in
            let costs = group.map(\.cost).sorted()
            let middle = costs.count / 2
            return costs.count % 2 == 1 ? costs[middle] : (costs[middle - 1] + costs[middle]) / 2
        }
    }

    /// `run`'s cost as a multiple of its type's median, when above `factor` times it.
    public static func ratio(of run: RunRecord, medians: [String: Double], factor: Double = 3) -> Double? {
        guard run.costUSD > 0, let median = medians[run.workflowType], median > 0 else { return nil }
        let ratio = run.costUSD / median
        return ratio > factor ? ratio : nil
    }
}
