import Foundation
import KeelCore

/// What the coordinator holds for admission: the waiting attempts, every provider's capacity,
/// the tasks running per capped queue, and what each admitted attempt holds until it ends.
struct AdmissionState {
    /// What an admitted attempt holds until its result (or its end) gives it back.
    struct Hold {
        var runId: String
        var provider: String?
        var demand: CallDemand?
        /// The provider's buckets that hold `demand` (those it had at admission).
        var takenFrom: Set<CapacityKind> = []
        var taskQueue: String?
        /// Estimated spend reserved against the run's budget.
        var reserved: Spend
    }

    var queue: AdmissionQueue
    var providers: [String: ProviderCapacity] = [:]
    var queueInFlight: [String: Int] = [:]
    var holds: [String: Hold] = [:]
    var reservedByRun: [String: Spend] = [:]
    /// By child run: the parent run whose budget the child's cap is reserved against, and the cap.
    var childBudgets: [String: (parent: String, held: Spend)] = [:]
    /// Largest spend an attempt of each budgeted (non-LLM) activity type reported, its estimate.
    var largestSpend: [String: Spend] = [:]
    /// Providers whose capacity changed since it was last written to the store.
    var dirty: Set<String> = []
    var lastPersisted = Date.distantPast
    var lastPass = Date.distantPast

    init(weights: [String: Double]) { queue = AdmissionQueue(weights: weights) }

}
