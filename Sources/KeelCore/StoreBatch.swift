import Foundation

/// Everything one unit of coordinator work changes, committed in one transaction.
///
/// Timer and activity rows are keyed, so a row written and removed within the same batch ends
/// up removed, whatever order the changes came in.
public struct StoreBatch: Sendable {
    public var runs: [RunRecord] = []
    public var events: [(runId: String, event: HistoryEvent)] = []
    /// Activity and timer changes by run, so that clearing a closed run does not scan the batch.
    public private(set) var activityChanges: [String: [Int64: ActivityChange]] = [:]
    public private(set) var timerChanges: [String: [String: TimerChange]] = [:]
    public var clearedRuns: [String] = []
    public var outbox: [ActivityTask] = []
    public var deletedOutbox: [String] = []
    /// Dead-letter entries to publish after the commit (their own outbox).
    public var deadLetters: [DeadLetterEntry] = []
    public var deletedDeadLetters: [String] = []
    /// Circuit breakers whose state changed, for `keel breakers`.
    public var circuitBreakers: [CircuitBreakerSnapshot] = []
    /// Providers' capacity as the coordinator learned it, to keep across a restart.
    public var providerCapacity: [ProviderCapacitySnapshot] = []
    /// Schedules created or changed, and deleted ones (by name).
    public var schedules: [ScheduleRecord] = []
    public var deletedSchedules: [String] = []

    public struct ActivityChange: Sendable {
        public var runId: String
        public var activityId: Int64
        public var record: ActivityRecord?
    }

    public struct TimerChange: Sendable {
        public var runId: String
        public var key: String
        public var record: TimerRecord?
    }

    public init() {}

    public var isEmpty: Bool {
        runs.isEmpty && events.isEmpty && activityChanges.isEmpty && timerChanges.isEmpty && clearedRuns.isEmpty
            && outbox.isEmpty && deletedOutbox.isEmpty && deadLetters.isEmpty && deletedDeadLetters.isEmpty
            && circuitBreakers.isEmpty && providerCapacity.isEmpty && schedules.isEmpty && deletedSchedules.isEmpty
    }

    /// Every activity change (an upsert, or a delete when `record` is nil).
    public var activities: [ActivityChange] { activityChanges.values.flatMap(\.values) }

    /// Every timer change (an upsert, or a delete when `record` is nil).
    public var timers: [TimerChange] { timerChanges.values.flatMap(\.values) }

    public mutating func save(_ activity: ActivityRecord) {
        activityChanges[activity.runId, default: [:]][activity.activityId] = ActivityChange(
            runId: activity.runId, activityId: activity.activityId, record: activity)
    }

    public mutating func deleteActivity(runId: String, activityId: Int64) {
        activityChanges[runId, default: [:]][activityId] = ActivityChange(runId: runId, activityId: activityId, record: nil)
    }

    public mutating func set(_ timer: TimerRecord) {
        timerChanges[timer.runId, default: [:]][timer.key] = TimerChange(runId: timer.runId, key: timer.key, record: timer)
    }

    public mutating func deleteTimer(runId: String, kind: TimerRecord.Kind, seq: Int64) {
        let key = "\(kind.rawValue):\(seq)"
        timerChanges[runId, default: [:]][key] = TimerChange(runId: runId, key: key, record: nil)
    }

    public mutating func clear(runId: String) {
        clearedRuns.append(runId)
        activityChanges.removeValue(forKey: runId)
        timerChanges.removeValue(forKey: runId)
    }
}
