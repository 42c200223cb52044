import Foundation

/// Which runs a listing shows (`keel list`, `GET /api/runs`), and in what order.
public struct RunQuery: Sendable, Hashable {
    public enum Order: String, Sendable, CaseIterable {
        /// Newest first.
        case started
        /// Most expensive first.
        case cost
    }

    /// A run status, or one of the conditions an operator filters by.
    public enum StatusFilter: Sendable, Hashable {
        case status(RunStatus)
        /// Open runs the coordinator's last stall check flagged.
        case stalled
        /// Runs with an activity parked in the dead-letter queue.
        case parked

        /// Parses `running`, `completed`, …, `stalled` or `parked`.
        public init?(_ text: String) {
            switch text {
            case "stalled": self = .stalled
            case "parked": self = .parked
            default:
                guard let status = RunStatus(rawValue: text) else { return nil }
                self = .status(status)
            }
        }

        /// Every accepted spelling, for help texts and errors.
        public static var names: [String] { RunStatus.allCases.map(\.rawValue) + ["stalled", "parked"] }
    }

    public var status: StatusFilter?
    public var workflowType: String?
    /// Part of the workflow id.
    public var search: String?
    public var minCostUSD: Double?
    /// Only runs costing more than 3x the median of their type (``CostOutliers``).
    public var costOutliersOnly: Bool
    public var order: Order
    public var limit: Int

    public init(
        status: StatusFilter? = nil, workflowType: String? = nil, search: String? = nil, minCostUSD: Double? = nil,
        costOutliersOnly: Bool = false, order: Order = .started, limit: Int = 100
    ) {
        self.status = status
        self.workflowType = workflowType
        self.search = search
        self.minCostUSD = minCostUSD
        self.costOutliersOnly = costOutliersOnly
        self.order = order
        self.limit = limit
    }
}

/// A run as a listing shows it: the record, and how far above its type's median cost it is
/// when it is a cost outlier.
public struct ListedRun: Codable, Sendable, Hashable {
    public var run: RunRecord
    /// Its cost as a multiple of the median of its workflow type, when above 3x.
    public var costRatio: Double?

    public init(run: RunRecord, costRatio: Double?) {
        self.run = run
        self.costRatio = costRatio
    }
}
