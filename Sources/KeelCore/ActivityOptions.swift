import Foundation

/// How an activity is dispatched, timed and retried.
///
/// At least one of `startToCloseTimeout` and `scheduleToCloseTimeout` is required.
public struct ActivityOptions: Codable, Sendable, Hashable {
    /// The queue the task is published to (`default`, `llm`, `gpu`, or any name).
    public var taskQueue: String
    /// Time a task may wait in the queue before a worker starts it. Not retried.
    public var scheduleToStartTimeout: Double?
    /// Time one attempt may run. Retried.
    public var startToCloseTimeout: Double?
    /// Time all attempts together may take, backoff included.
    public var scheduleToCloseTimeout: Double?
    /// Maximum time between heartbeats of a running attempt. Retried.
    public var heartbeatTimeout: Double?
    public var retryPolicy: RetryPolicy
    /// When the last attempt fails (attempts used up, a non-retryable error, a schedule-to-close
    /// timeout), the activity waits in the dead-letter queue for an operator instead of failing
    /// the workflow: `keel dlq redrive` gives it fresh attempts, `keel dlq discard` hands the
    /// workflow the failure. Either way the activity is dead-lettered with its context.
    public var parkOnExhaustion: Bool
    /// The activity spends the workflow's budget (LLM calls do): once the run's budget is spent
    /// it is not dispatched, neither its first attempt nor a retry; it fails with
    /// `BudgetExhausted` instead.
    public var countsAgainstBudget: Bool {
        get { budgeted ?? false }
        set { budgeted = newValue ? true : nil }
    }
    // Optional so that options recorded before the field existed still decode.
    var budgeted: Bool?
    /// When capacity is short (an LLM provider's limits, a task queue's cap, the run's budget),
    /// lower numbers are admitted first: 1 (highest) to 5 (lowest). Nil: the run's
    /// ``WorkflowOptions/priority``, else 3.
    public var priority: Int?
    /// Whose work this is (a tenant, a customer). Among waiting tasks of equal priority, capacity
    /// is shared across fairness keys by weighted round robin (weights in `keel.yaml`), so one
    /// key's large batch cannot starve another's single request. Nil: the run's
    /// ``WorkflowOptions/fairnessKey``, else one shared key.
    public var fairnessKey: String?

    public init(
        taskQueue: String = "default", scheduleToStartTimeout: Duration? = nil,
        startToCloseTimeout: Duration? = nil, scheduleToCloseTimeout: Duration? = nil,
        heartbeatTimeout: Duration? = nil, retryPolicy: RetryPolicy = .default,
        parkOnExhaustion: Bool = false, countsAgainstBudget: Bool = false
    ) {
        self.taskQueue = taskQueue
        self.scheduleToStartTimeout = scheduleToStartTimeout?.seconds
        self.startToCloseTimeout = startToCloseTimeout?.seconds
        self.scheduleToCloseTimeout = scheduleToCloseTimeout?.seconds
        self.heartbeatTimeout = heartbeatTimeout?.seconds
        self.retryPolicy = retryPolicy
        self.parkOnExhaustion = parkOnExhaustion
        self.budgeted = countsAgainstBudget ? true : nil
    }

    /// Checks the options; the message names the activity and what to change.
    public func validate(activityType: String) throws {
        if startToCloseTimeout == nil && scheduleToCloseTimeout == nil {
            throw InvalidOptionsError(
                message: "activity \(activityType) needs startToCloseTimeout or scheduleToCloseTimeout "
                    + "(e.g. ActivityOptions(startToCloseTimeout: .seconds(60)))")
        }
        for (name, value) in [
            ("scheduleToStartTimeout", scheduleToStartTimeout), ("startToCloseTimeout", startToCloseTimeout),
            ("scheduleToCloseTimeout", scheduleToCloseTimeout), ("heartbeatTimeout", heartbeatTimeout)
        ] {
            if let value, value <= 0 {
                throw InvalidOptionsError(message: "activity \(activityType): \(name) must be positive")
            }
        }
        if taskQueue.isEmpty || taskQueue.contains(where: { $0.isWhitespace }) {
            throw InvalidOptionsError(message: "activity \(activityType): task queue name '\(taskQueue)' is not valid")
        }
        // It becomes the RabbitMQ queue `keel.q.<name>`, and a queue name is at most 255 bytes.
        if taskQueue.utf8.count > 200 {
            throw InvalidOptionsError(
                message: "activity \(activityType): task queue name is \(taskQueue.utf8.count) bytes, over the 200-byte limit")
        }
        do { try retryPolicy.validate() } catch let error as InvalidOptionsError {
            throw InvalidOptionsError(message: "activity \(activityType): \(error.message)")
        }
        if let priority, !Priority.range.contains(priority) {
            throw InvalidOptionsError(message: "activity \(activityType): priority \(priority) is not 1 (highest) to 5 (lowest)")
        }
    }
}

/// Admission priorities: 1 is admitted first, 5 last.
public enum Priority {
    public static let range = 1...5
    public static let `default` = 3
}

/// What happens when a start names a workflow id that has an open run.
public enum WorkflowIdConflictPolicy: String, Codable, Sendable, CaseIterable {
    /// Refuse the start.
    case fail
    /// Return the open run (the default): a start submitted twice makes one run.
    case useExisting
    /// Terminate the open run and start a new one.
    case terminateExisting
}

/// What happens to a child workflow when its parent's run closes (completes, fails, is
/// cancelled, terminated or times out; not when it continues as new). Temporal's policies.
public enum ParentClosePolicy: String, Codable, Sendable, CaseIterable {
    /// The child is terminated (the default): nothing runs, or spends, for a parent that is gone.
    case terminate
    /// The child is asked to cancel: its pending awaits throw `CancelledError`, and it may clean up.
    case requestCancel
    /// The child runs on alone.
    case abandon
}

/// What happens when a start names a workflow id whose runs are all closed.
public enum WorkflowIdReusePolicy: String, Codable, Sendable, CaseIterable {
    case allowDuplicate
    /// Only when the last run did not complete successfully.
    case allowDuplicateFailedOnly
    case rejectDuplicate
}

/// Options of a workflow run.
public struct WorkflowOptions: Codable, Sendable, Hashable {
    public var idConflictPolicy: WorkflowIdConflictPolicy
    public var idReusePolicy: WorkflowIdReusePolicy
    /// Time the whole run (all continue-as-new runs included) may take, seconds.
    public var executionTimeout: Double?
    /// Tokens and dollars the run may spend on activities that count against the budget.
    public var budget: SpendLimit?
    /// The default ``ActivityOptions/priority`` of the run's activities (1 highest to 5 lowest).
    public var priority: Int?
    /// The default ``ActivityOptions/fairnessKey`` of the run's activities (a tenant).
    public var fairnessKey: String?
    /// For a child workflow: what happens to it when its parent's run closes (nil: terminate).
    public var parentClosePolicy: ParentClosePolicy?

    public init(
        idConflictPolicy: WorkflowIdConflictPolicy = .useExisting,
        idReusePolicy: WorkflowIdReusePolicy = .allowDuplicate, executionTimeout: Duration? = nil,
        budget: SpendLimit? = nil, priority: Int? = nil, fairnessKey: String? = nil,
        parentClosePolicy: ParentClosePolicy? = nil
    ) {
        self.idConflictPolicy = idConflictPolicy
        self.idReusePolicy = idReusePolicy
        self.executionTimeout = executionTimeout?.seconds
        self.budget = budget
        self.priority = priority
        self.fairnessKey = fairnessKey
        self.parentClosePolicy = parentClosePolicy
    }

    private enum CodingKeys: String, CodingKey {
        case idConflictPolicy, idReusePolicy, executionTimeout, budget, priority, fairnessKey, parentClosePolicy
    }

    // Every field is optional on the wire: a start that names only `budget` gets the defaults.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        idConflictPolicy = try container.decodeIfPresent(WorkflowIdConflictPolicy.self, forKey: .idConflictPolicy) ?? .useExisting
        idReusePolicy = try container.decodeIfPresent(WorkflowIdReusePolicy.self, forKey: .idReusePolicy) ?? .allowDuplicate
        executionTimeout = try container.decodeIfPresent(Double.self, forKey: .executionTimeout)
        budget = try container.decodeIfPresent(SpendLimit.self, forKey: .budget)
        priority = try container.decodeIfPresent(Int.self, forKey: .priority)
        fairnessKey = try container.decodeIfPresent(String.self, forKey: .fairnessKey)
        parentClosePolicy = try container.decodeIfPresent(ParentClosePolicy.self, forKey: .parentClosePolicy)
    }

    /// Throws what a start with these options cannot have (a non-positive timeout or budget).
    public func validate() throws {
        if let executionTimeout, !(executionTimeout > 0) {
            throw InvalidOptionsError(message: "executionTimeout must be a positive number of seconds")
        }
        try budget?.validate()
        if let priority, !Priority.range.contains(priority) {
            throw InvalidOptionsError(message: "priority \(priority) is not 1 (highest) to 5 (lowest)")
        }
        if let fairnessKey, fairnessKey.isEmpty || fairnessKey.utf8.count > 255 {
            throw InvalidOptionsError(message: "fairnessKey must be 1 to 255 bytes")
        }
    }
}
