import Foundation

/// A schedule that is invalid as given: a bad cron expression, an unknown time zone, a name or
/// id template that cannot work. Named in the message; nothing is stored.
public struct ScheduleError: KeelError, Equatable {
    public var message: String
    public var errorType: String { "InvalidSchedule" }
    public var isNonRetryable: Bool { true }

    public init(_ message: String) { self.message = message }
}

/// What a schedule does when a firing comes while the run of the previous one is still open.
public enum ScheduleOverlap: String, Codable, Sendable, CaseIterable {
    /// The firing is skipped (and counted).
    case skip
    /// One firing waits and starts when the open run closes; more are skipped.
    case bufferOne = "buffer-one"
    /// Every firing starts a run.
    case allowAll = "allow-all"
}

/// What a schedule starts, and when: `keel schedule create`, and the `schedule-create` job.
public struct ScheduleSpec: Codable, Sendable, Equatable {
    public static let defaultIdTemplate = "{schedule}-{time}"
    public static let defaultCatchupWindow = 3600.0

    public var name: String
    /// Five-field cron, in `timeZone`. Exactly one of `cron` and `every`.
    public var cron: String?
    /// Seconds between firings, counted from 1970-01-01 UTC (`15m` fires at :00, :15, …).
    public var every: Double?
    public var workflowType: String
    public var input: Payload
    /// The runs' options (budget, priority, …); their id policies are the schedule's own.
    public var options: WorkflowOptions?
    /// Each firing's workflow id: `{schedule}` is the name, `{time}` the firing's time in UTC
    /// (`20261130T140000Z`). Must hold `{time}`, so that each firing has an id of its own.
    public var idTemplate: String?
    public var overlap: ScheduleOverlap?
    /// After downtime, firings missed less than this many seconds ago still run; older ones are
    /// skipped and counted.
    public var catchupWindow: Double?
    /// An IANA zone (`Europe/Paris`) for `cron`; default UTC.
    public var timeZone: String?

    public init(
        name: String, cron: String? = nil, every: Double? = nil, workflowType: String, input: Payload = .null,
        options: WorkflowOptions? = nil, idTemplate: String? = nil, overlap: ScheduleOverlap? = nil,
        catchupWindow: Double? = nil, timeZone: String? = nil
    ) {
        self.name = name
        self.cron = cron
        self.every = every
        self.workflowType = workflowType
        self.input = input
        self.options = options
        self.idTemplate = idTemplate
        self.overlap = overlap
        self.catchupWindow = catchupWindow
        self.timeZone = timeZone
    }

    public var overlapPolicy: ScheduleOverlap { overlap ?? .skip }
    public var catchup: Double { catchupWindow ?? Self.defaultCatchupWindow }

    /// Throws what is wrong, naming the field.
    public func validate() throws(ScheduleError) {
        guard !name.isEmpty, name.count <= 200,
            name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0) })
        else {
            throw ScheduleError("schedule name '\(name)' must be 1 to 200 letters, digits, '.', '_' or '-'")
        }
        switch (cron, every) {
        case (nil, nil), (.some, .some):
            throw ScheduleError("schedule \(name) needs exactly one of a cron expression and an interval (every)")
        case (let cron?, nil):
            let expression = try CronExpression(cron)
            guard expression.next(after: Date(), in: try zone()) != nil else {
                throw ScheduleError("cron expression '\(cron)' never fires")
            }
        case (nil, let every?):
            guard every.isFinite, every >= 1 else {
                throw ScheduleError("interval of schedule \(name) must be at least 1 second, not \(every)")
            }
        }
        _ = try zone()
        guard !workflowType.isEmpty else { throw ScheduleError("schedule \(name) needs a workflow type") }
        guard (idTemplate ?? Self.defaultIdTemplate).contains("{time}") else {
            throw ScheduleError("id template '\(idTemplate ?? "")' must contain {time}: each firing needs an id of its own")
        }
        if let catchupWindow, !(catchupWindow.isFinite && catchupWindow >= 0) {
            throw ScheduleError("catch-up window must be zero or more seconds, not \(catchupWindow)")
        }
        do {
            try (options ?? WorkflowOptions()).validate()
        } catch let error as InvalidOptionsError {
            throw ScheduleError(error.message)
        } catch {
            throw ScheduleError("\(error)")
        }
    }

    func zone() throws(ScheduleError) -> TimeZone {
        guard let identifier = timeZone else { return TimeZone(identifier: "UTC")! }
        guard let zone = TimeZone(identifier: identifier) else {
            throw ScheduleError("unknown time zone '\(identifier)'; use an IANA name such as Europe/Paris or UTC")
        }
        return zone
    }

    /// The first firing after `date`; nil for a spec that does not validate.
    public func next(after date: Date) -> Date? {
        if let every {
            guard every >= 1 else { return nil }
            let since = date.timeIntervalSince1970
            return Date(timeIntervalSince1970: (since / every).rounded(.down) * every + every)
        }
        guard let cron, let expression = try? CronExpression(cron), let zone = try? zone() else { return nil }
        return expression.next(after: date, in: zone)
    }

    /// The firing's time as it appears in ids: `20261130T140000Z`.
    public static func stamp(_ time: Date) -> String { stampFormatter.string(from: time) }

    // ISO8601DateFormatter is thread-safe once configured.
    nonisolated(unsafe) private static let stampFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withYear, .withMonth, .withDay, .withTime, .withTimeZone]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter
    }()

    /// The workflow id of the firing at `time`.
    public func workflowId(at time: Date) -> String {
        (idTemplate ?? Self.defaultIdTemplate).replacingOccurrences(of: "{schedule}", with: name)
            .replacingOccurrences(of: "{time}", with: Self.stamp(time))
    }

    /// The start's request id: a firing that is started again (after a crash) makes no second run.
    public func requestId(at time: Date) -> String { "schedule:\(name):\(Self.stamp(time))" }
}

/// One firing, as `keel schedule describe` lists it.
public struct ScheduleFiring: Codable, Sendable, Equatable {
    public enum Outcome: String, Codable, Sendable {
        /// Started a run (or found the run a previous attempt of this firing started).
        case started
        /// A run of the schedule was still open (overlap skip, or buffer-one with one waiting).
        case skippedOverlap = "skipped-overlap"
        /// Waits for the open run to close (buffer-one).
        case buffered
        /// Missed by more than the catch-up window while the coordinator was down or busy.
        case missed
        /// The start was refused (the workflow type is gone, an id policy); `error` says why.
        case failed
    }

    public var time: Date
    public var outcome: Outcome
    public var workflowId: String?
    public var triggered: Bool?
    public var error: String?

    /// `triggered` is recorded only when true (absent from the JSON otherwise).
    public init(time: Date, outcome: Outcome, workflowId: String? = nil, triggered: Bool = false, error: String? = nil) {
        self.time = time
        self.outcome = outcome
        self.workflowId = workflowId
        self.triggered = triggered ? true : nil
        self.error = error
    }
}

/// A schedule and where it stands, as the coordinator keeps it.
public struct ScheduleRecord: Codable, Sendable, Equatable {
    public static let recentLimit = 20

    public var spec: ScheduleSpec
    public var paused: Bool
    /// Why it was paused, when given.
    public var note: String?
    public var createdAt: Date
    /// The next firing; nil when paused or when a cron never fires again.
    public var nextFireAt: Date?
    /// A firing waiting for the open run to close (buffer-one).
    public var buffered: Date?
    /// The workflow id of the last run a firing started: the one an overlap policy waits on.
    public var lastWorkflowId: String?
    public var started: Int
    public var skippedOverlap: Int
    /// Firings missed by more than the catch-up window.
    public var missed: Int
    /// The last firings, newest last.
    public var recent: [ScheduleFiring]

    public init(spec: ScheduleSpec, createdAt: Date) {
        self.spec = spec
        paused = false
        self.createdAt = createdAt
        nextFireAt = spec.next(after: createdAt)
        started = 0
        skippedOverlap = 0
        missed = 0
        recent = []
    }

    public mutating func note(_ firing: ScheduleFiring) {
        recent.append(firing)
        if recent.count > Self.recentLimit { recent.removeFirst(recent.count - Self.recentLimit) }
    }

    /// The next `count` firings after `date`.
    public func upcoming(after date: Date, count: Int) -> [Date] {
        guard !paused, var time = nextFireAt else { return [] }
        var times: [Date] = []
        while times.count < count {
            if time > date { times.append(time) }
            guard let next = spec.next(after: time) else { break }
            time = next
        }
        return times
    }
}
