import Foundation

/// One activity attempt as a bar on a run's timeline: when it was scheduled, started (and on
/// which worker) and ended, and how.
public struct AttemptSpan: Codable, Sendable, Hashable {
    public enum Outcome: String, Codable, Sendable {
        /// Published, no worker has started it yet.
        case waiting
        case running
        case completed
        /// Failed; `retrying` says whether another attempt follows.
        case failed
        case timedOut
        /// Exhausted and parked in the dead-letter queue.
        case parked
        /// Given up: the workflow was cancelled, or an operator discarded it.
        case cancelled
    }

    /// The activity's sequence number in its run.
    public var activityId: Int64
    public var activityType: String
    public var taskQueue: String
    public var attempt: Int
    public var scheduledAt: Date
    public var startedAt: Date?
    /// The worker that started it.
    public var worker: String?
    /// Of the time between scheduled and started, how long the attempt waited in the coordinator
    /// for capacity (its LLM provider's limits, its queue's cap, its run's budget), seconds.
    public var capacityWaitSeconds: Double?
    public var endedAt: Date?
    public var outcome: Outcome
    /// Whether another attempt follows a failure or timeout.
    public var retrying: Bool
    public var errorType: String?
    public var errorMessage: String?
}

/// What an `activityStarted` event records beside its worker (absent when there is nothing).
public struct ActivityStartedAttributes: Codable, Sendable, Hashable {
    /// How long the attempt waited in the coordinator for capacity before it was published.
    public var capacityWaitSeconds: Double?
    /// Set when the start came with the attempt's result (an activity shorter than the worker's
    /// start-report delay): how long the activity ran, so it began that long before this event.
    public var ranSeconds: Double?

    public init(capacityWaitSeconds: Double?, ranSeconds: Double? = nil) {
        self.capacityWaitSeconds = capacityWaitSeconds
        self.ranSeconds = ranSeconds
    }

    /// The event's attributes; nil when there is nothing to say. Written by hand: most steps
    /// now record a `ranSeconds`, and Foundation's encoder would cost every step microseconds.
    public var payload: Payload? {
        guard capacityWaitSeconds != nil || ranSeconds != nil else { return nil }
        var json = JSONWriter(capacity: 64)
        // Only a number that is not finite fails (the coordinator clamps both): then nothing
        // rather than half an object.
        do {
            try json.object { json in
                try json.member("capacityWaitSeconds", capacityWaitSeconds)
                try json.member("ranSeconds", ranSeconds)
            }
        } catch {
            return nil
        }
        return Payload(data: json.data)
    }

    /// When the attempt began: the event's time, less ``ranSeconds`` when the start came with
    /// the result.
    public static func began(_ event: HistoryEvent) -> Date { of(event)?.began(at: event.time) ?? event.time }

    /// ``began(_:)`` for attributes already read from an event of time `eventTime`.
    public func began(at eventTime: Date) -> Date { eventTime.addingTimeInterval(-(ranSeconds ?? 0)) }

    public static func of(_ event: HistoryEvent) -> ActivityStartedAttributes? {
        guard event.kind == .activityStarted else { return nil }
        return try? event.attributes?.decode(ActivityStartedAttributes.self)
    }
}

/// The attempts of a run's activities, read from its history, in the order they were scheduled.
public enum AttemptTimeline {
    public static func spans(_ events: [HistoryEvent]) -> [AttemptSpan] {
        var spans: [AttemptSpan] = []
        // Index of the current (last) attempt of each activity.
        var current: [Int64: Int] = [:]
        for event in events {
            guard let ref = event.ref else { continue }
            switch event.kind {
            case .activityScheduled:
                let options = try? event.attributes?.decode(ActivityOptions.self)
                current[ref] = spans.count
                spans.append(
                    AttemptSpan(
                        activityId: ref, activityType: event.name ?? "?", taskQueue: options?.taskQueue ?? "default", attempt: 1,
                        scheduledAt: event.time, outcome: .waiting, retrying: false))
            case .activityStarted:
                guard let index = current[ref] else { continue }
                var span = spans[index]
                let attempt = event.attempt ?? span.attempt
                if span.startedAt != nil || span.endedAt != nil || attempt != span.attempt {
                    // A new attempt: it was scheduled when the previous one ended (its retry
                    // delay shows as the gap between the bars).
                    span = AttemptSpan(
                        activityId: ref, activityType: span.activityType, taskQueue: span.taskQueue, attempt: attempt,
                        scheduledAt: span.endedAt ?? event.time, outcome: .waiting, retrying: false)
                    current[ref] = spans.count
                    spans.append(span)
                }
                spans[current[ref]!].attempt = attempt
                let attributes = ActivityStartedAttributes.of(event)
                spans[current[ref]!].startedAt = max(
                    attributes?.began(at: event.time) ?? event.time, spans[current[ref]!].scheduledAt)
                spans[current[ref]!].worker = event.name
                spans[current[ref]!].capacityWaitSeconds = attributes?.capacityWaitSeconds
                spans[current[ref]!].outcome = .running
            case .activityCompleted, .activityFailed, .activityTimedOut, .activityParked, .activityCancelRequested:
                guard let index = current[ref], spans[index].endedAt == nil else { continue }
                spans[index].endedAt = event.time
                if let attempt = event.attempt { spans[index].attempt = attempt }
                spans[index].errorType = event.failure?.type
                spans[index].errorMessage = event.failure?.message
                spans[index].retrying = event.failure?.retryState == .willRetry
                switch event.kind {
                case .activityCompleted: spans[index].outcome = .completed
                case .activityTimedOut: spans[index].outcome = .timedOut
                case .activityParked: spans[index].outcome = .parked
                case .activityCancelRequested: spans[index].outcome = .cancelled
                default:
                    // A start-to-close timeout the worker enforced arrives as a failure: still a timeout.
                    if event.name == HistoryEvent.discardedMark {
                        spans[index].outcome = .cancelled
                    } else {
                        spans[index].outcome = event.failure?.timeoutKind == nil ? .failed : .timedOut
                    }
                }
            case .activityRedriven:
                // Fresh attempts after a redrive: the next start opens a new bar.
                guard let index = current[ref] else { continue }
                let span = spans[index]
                current[ref] = spans.count
                spans.append(
                    AttemptSpan(
                        activityId: ref, activityType: span.activityType, taskQueue: span.taskQueue, attempt: span.attempt + 1,
                        scheduledAt: event.time, outcome: .waiting, retrying: false))
            default:
                continue
            }
        }
        return spans
    }
}
