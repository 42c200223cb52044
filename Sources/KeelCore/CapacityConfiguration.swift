import Foundation

/// How the coordinator admits work by capacity (`keel.yaml`: providers' `limits`, `taskQueues`,
/// `llm.fairness`).
public struct CapacityConfiguration: Sendable {
    /// Admit LLM calls against their providers' capacity, tasks against their queue's cap and
    /// budgeted activities against their run's budget before they are published. False:
    /// every task is published at once, and a rate-limited attempt is retried by its policy
    /// (`keel coordinator --admission off`, for comparison).
    public var enabled = true
    /// What the coordinator knows of each LLM provider before its first answer, by name.
    public var providers: [String: ProviderProfile] = [:]
    /// Tasks of these queues running at once across every worker (`taskQueues: {gpu: {maxConcurrent: 2}}`).
    public var taskQueueLimits: [String: Int] = [:]
    /// Weights of fairness keys in the round robin among waiting tasks of equal priority (1 each
    /// by default).
    public var fairnessWeights: [String: Double] = [:]

    public init() {}
}
