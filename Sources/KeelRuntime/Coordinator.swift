import Foundation
import KeelCore
import Logging
import Synchronization
import Tracing

/// Runs workflows: records every step in the history store, publishes activity tasks, applies
/// results, fires durable timers, and after a restart replays history to resume where it was.
///
/// Every public operation is one unit of work: its events, timers, activity state and outbox
/// rows are committed in one transaction before it returns, and tasks are published only after
/// that commit (transactional outbox). A caller acknowledges the message that caused the work
/// only after the call returns.
///
/// ```swift
/// let coordinator = Coordinator(store: store, workflows: registry, publisher: broker)
/// try await coordinator.recover()
/// let run = try await coordinator.start(StartRequest(Summarize.self, id: "doc-1", input: doc))
/// ```
public actor Coordinator {
    public let store: any HistoryStore
    let workflows: WorkflowRegistry
    let publisher: any TaskPublisher
    let clock: any WallClock
    let configuration: CoordinatorConfiguration
    let tracer: any Tracer
    let logger: Logger

    var runs: [String: LiveRun] = [:]
    var openRunByWorkflowId: [String: String] = [:]
    var completionWaiters: [String: [CheckedContinuation<RunRecord, Never>]] = [:]
    var generator = SystemRandomNumberGenerator()
    /// Outbox rows (attempt keys, dead-letter ids) being published right now. A publish suspends
    /// the actor; ``flushOutbox()`` running meanwhile must not publish them a second time.
    var publishing: Set<String> = []
    /// Runs found stalled by the last ``checkStalls(threshold:)``.
    var stalledRunIds: Set<String> = []
    /// Provider circuit breakers shared by every run of this coordinator.
    public nonisolated let breakers: CircuitBreakers
    /// Breaker state changes not yet committed (they happen while a unit of work runs).
    private let breakerChanges = BreakerChanges()
    let metrics = CoordinatorMetrics()
    /// Names the run whose workflow code is running, for the next process if this one crashes.
    let marker: CrashMarker?
    /// The run whose code was running when the previous coordinator crashed, if one was.
    let lastCrash: CrashMarker.Crash?

    private final class BreakerChanges: Sendable {
        let pending = Mutex<[CircuitBreakerSnapshot]>([])
    }

    /// An open run held in memory.
    final class LiveRun {
        var record: RunRecord
        var instance: WorkflowInstance?
        var activities: [Int64: ActivityRecord] = [:]
        var nextEventId: Int64 = 1
        /// The run's span while it is live here, and the headers that carry it to workers.
        var span: (any Span)?
        var traceHeaders: [String: String]?

        init(record: RunRecord) { self.record = record }
        var runId: String { record.runId }
    }

    /// One transaction's worth of changes.
    struct Work {
        var now: Date
        var batch = StoreBatch()
        var touched: [String: LiveRun] = [:]
        var closed: [RunRecord] = []
    }

    public init(
        store: any HistoryStore, workflows: WorkflowRegistry, publisher: any TaskPublisher,
        clock: any WallClock = SystemWallClock(), configuration: CoordinatorConfiguration = .init(),
        logger: Logger = Logger(label: "keel.coordinator")
    ) {
        self.store = store
        self.workflows = workflows
        self.publisher = publisher
        self.clock = clock
        self.configuration = configuration
        self.tracer = configuration.tracer ?? InstrumentationSystem.tracer
        self.logger = logger
        var marker: CrashMarker?
        if let path = configuration.crashMarkerPath {
            do { marker = try CrashMarker(path: path) } catch {
                logger.error("crash quarantine is off: \(error)")
            }
        }
        self.marker = marker
        lastCrash = marker?.lastCrash
        let changes = breakerChanges
        let metrics = self.metrics
        self.breakers = CircuitBreakers(policy: configuration.circuitBreaker) { snapshot in
            changes.pending.withLock { $0.append(snapshot) }
            metrics.breaker(snapshot)
            logger.warning(
                "circuit breaker \(snapshot.state.rawValue)",
                metadata: ["provider": "\(snapshot.provider)", "consecutive_failures": "\(snapshot.consecutiveFailures)"])
        }
    }

    // MARK: Recovery

    /// What ``recover()`` found.
    public struct RecoveryReport: Sendable {
        public var runs = 0
        public var events = 0
        public var blocked = 0
        public var republished = 0
    }

    /// Loads every open run, replays its history and republishes the outbox. Call once at start.
    @discardableResult
    public func recover() async throws -> RecoveryReport {
        let started = ContinuousClock.now
        var report = RecoveryReport()
        var work = Work(now: clock.now())
        if let crash = lastCrash {
            let outlook = crash.count >= 2
                ? "it happened \(crash.count) times in a row, so the run is quarantined (blocked)"
                : "it runs once more, and is quarantined if it crashes again"
            logger.error(
                "the previous coordinator died while running the workflow code of \(crash.workflowId) (run \(crash.runId), after event \(crash.lastEventId)): \(CrashMarker.describe(signal: crash.signal)); \(outlook)")
        }
        let state = try store.openRunState()
        for record in try store.openRuns() {
            let run = LiveRun(record: record)
            startSpan(of: run)
            for activity in state.activities[record.runId] ?? [] {
                run.activities[activity.activityId] = activity
            }
            let events = state.events[record.runId] ?? []
            run.nextEventId = (events.last?.id ?? 0) + 1
            runs[run.runId] = run
            openRunByWorkflowId[record.workflowId] = run.runId
            report.runs += 1
            report.events += events.count
            if let failure = quarantine(workflowId: record.workflowId) {
                block(run, failure, &work)
                report.blocked += 1
                continue
            }
            if record.status == .blocked, record.failure?.type == Self.crashedType {
                report.blocked += 1  // stays blocked until an operator unblocks it
                continue
            }
            guard let definition = try? workflows.definition(named: record.workflowType) else {
                let error = UnknownTypeError(kind: "workflow", name: record.workflowType, known: workflows.names)
                block(run, Failure(error), &work)
                report.blocked += 1
                continue
            }
            if resume(run, definition, events, &work) != nil { report.blocked += 1 }
        }
        try await finish(&work)
        report.republished = try await flushOutbox()
        metrics.recovered(runs: report.runs, events: report.events, seconds: (ContinuousClock.now - started).seconds)
        logger.info("recovered \(report.runs) open runs (\(report.events) events, \(report.blocked) blocked, \(report.republished) tasks republished)")
        return report
    }

    /// Publishes tasks and dead-letter entries left in their outboxes (after a crash or a failed
    /// publish). Returns how many.
    @discardableResult
    public func flushOutbox() async throws -> Int {
        let skip = publishing
        var stale = StoreBatch()
        // Those being published now are left alone (and not even decoded).
        var tasks = try store.outbox(skipping: skip).filter { task in
            // Only an attempt still waiting for a worker needs its task; one that started (or a
            // closed run) was delivered already, and sending it again would run it twice.
            guard let activity = runs[task.runId]?.activities[task.activityId], activity.attempt == task.attempt,
                activity.state == .scheduled
            else {
                stale.deletedOutbox.append(task.attemptKey)
                return false
            }
            return true
        }
        // The first copy of each may have gone out before the crash (or the failed publish):
        // workers claim these before running them.
        for index in tasks.indices { tasks[index].republished = true }
        let deadLetters = try store.deadLetterOutbox(skipping: skip)
        try store.commit(stale)
        guard !tasks.isEmpty || !deadLetters.isEmpty else { return 0 }
        let outgoing = Outgoing(tasks: tasks, deadLetters: deadLetters)
        publishing.formUnion(outgoing.keys)
        return await publish(outgoing) ? tasks.count + deadLetters.count : 0
    }

    /// Releases every in-memory run (their state is in the store). For shutdown and tests.
    public func shutdown() {
        for run in runs.values { guarded(run) { run.instance?.evict() } }
        runs.removeAll()
        openRunByWorkflowId.removeAll()
    }

    // MARK: Starting, signalling, cancelling

    /// Starts a run, following the id conflict and reuse policies. A start with a request id that
    /// already made a run returns that run.
    public func start(_ request: StartRequest) async throws -> StartResult {
        try await start([request])[0].get()
    }

    /// Starts many runs in one transaction (group commit). Each request succeeds or fails on its
    /// own; a failed commit throws for all.
    public func start(_ requests: [StartRequest]) async throws -> [Result<StartResult, any Error>] {
        let (results, outgoing) = try commitStarts(requests)
        await publish(outgoing)
        return results
    }

    /// Like ``start(_:)-([StartRequest])``, but returns once committed; the caller publishes the
    /// outcome with ``publish(_:)``.
    public func commitStarts(_ requests: [StartRequest]) throws -> ([Result<StartResult, any Error>], Outgoing) {
        var work = Work(now: clock.now())
        var byRequestId: [String: StartResult] = [:]
        var results: [Result<StartResult, any Error>] = []
        for request in requests {
            do {
                results.append(.success(try start(request, byRequestId: &byRequestId, &work)))
            } catch {
                results.append(.failure(error))
            }
        }
        return (results, try commit(&work))
    }

    private func start(
        _ request: StartRequest, byRequestId: inout [String: StartResult], _ work: inout Work
    ) throws -> StartResult {
        let definition = try workflows.definition(named: request.workflowType)
        guard !request.workflowId.isEmpty else {
            throw InvalidOptionsError(message: "a workflow id is required to start \(request.workflowType)")
        }
        try configuration.limits.check(StartJob(request))
        if let requestId = request.requestId {
            if let earlier = byRequestId[requestId] { return StartResult(workflowId: earlier.workflowId, runId: earlier.runId, started: false) }
            if let existing = try store.run(requestId: requestId) {
                return StartResult(workflowId: existing.workflowId, runId: existing.runId, started: false)
            }
        }
        if let openId = openRunByWorkflowId[request.workflowId], let open = runs[openId] {
            switch request.options.idConflictPolicy {
            case .fail:
                throw WorkflowAlreadyStartedError(
                    workflowId: request.workflowId, runId: openId, status: open.record.status,
                    policy: "idConflictPolicy fail")
            case .useExisting:
                return StartResult(workflowId: request.workflowId, runId: openId, started: false)
            case .terminateExisting:
                terminate(open, reason: "terminated by a new start (idConflictPolicy terminateExisting)", &work)
            }
        } else if let last = try store.latestRun(workflowId: request.workflowId) {
            switch request.options.idReusePolicy {
            case .allowDuplicate:
                break
            case .allowDuplicateFailedOnly where last.status != .completed:
                break
            case .allowDuplicateFailedOnly, .rejectDuplicate:
                throw WorkflowAlreadyStartedError(
                    workflowId: request.workflowId, runId: last.runId, status: last.status,
                    policy: "idReusePolicy \(request.options.idReusePolicy.rawValue)")
            }
        }
        let run = startRun(
            definition, workflowId: request.workflowId, input: request.input, options: request.options,
            requestId: request.requestId, parent: nil, continuedFrom: nil,
            blockedBy: quarantine(workflowId: request.workflowId), &work)
        let result = StartResult(workflowId: run.record.workflowId, runId: run.runId, started: true)
        if let requestId = request.requestId { byRequestId[requestId] = result }
        return result
    }

    /// Delivers a signal to the open run of `workflowId`.
    public func signal(workflowId: String, name: String, input: Payload = .null) async throws {
        try configuration.limits.check(WorkflowJob(workflowId: workflowId, name: name, input: input), .signal)
        let run = try openRun(workflowId, for: "signal")
        var work = Work(now: clock.now())
        apply(HistoryEvent(id: 0, time: work.now, kind: .signalReceived, name: name, payload: input), to: run, &work)
        try await finish(&work)
    }

    /// Asks the open run of `workflowId` to cancel: its pending awaits throw `CancelledError`.
    public func cancel(workflowId: String) async throws {
        let run = try openRun(workflowId, for: "cancel")
        var work = Work(now: clock.now())
        apply(HistoryEvent(id: 0, time: work.now, kind: .cancelRequested), to: run, &work)
        try await finish(&work)
    }

    /// Ends the open run of `workflowId` at once, without running any more of its code.
    public func terminate(workflowId: String, reason: String) async throws {
        let run = try openRun(workflowId, for: "terminate")
        var work = Work(now: clock.now())
        terminate(run, reason: reason, &work)
        try await finish(&work)
    }

    /// Gives a parked activity fresh attempts (its retry policy starts counting again, its
    /// schedule-to-close deadline restarts); the workflow continues where it was when one succeeds.
    public func redrive(runId: String, activityId: Int64) async throws {
        let (run, activity) = try parkedActivity(runId: runId, activityId: activityId, for: "redrive")
        var work = Work(now: clock.now())
        var redriven = activity
        append(
            HistoryEvent(id: 0, time: work.now, kind: .activityRedriven, ref: activityId, attempt: activity.attempt),
            to: run, &work)
        redriven.attemptsBeforeRedrive = activity.attempt
        redriven.parkedFailure = nil
        redriven.scheduledAt = work.now
        if let timeout = activity.options.scheduleToCloseTimeout {
            work.batch.set(TimerRecord(
                runId: runId, kind: .scheduleToClose, seq: activityId, fireAt: work.now.addingTimeInterval(timeout)))
        }
        dispatch(&redriven, in: run, &work)
        try await finish(&work)
    }

    /// Hands a parked activity's failure to its workflow, as if it had not been parked.
    public func discard(runId: String, activityId: Int64) async throws {
        let (run, activity) = try parkedActivity(runId: runId, activityId: activityId, for: "discard")
        var work = Work(now: clock.now())
        endActivity(activity, in: run, &work)
        apply(
            HistoryEvent(id: 0, time: work.now, kind: .activityFailed, ref: activityId,
                         name: HistoryEvent.discardedMark, attempt: activity.attempt,
                         failure: activity.parkedFailure ?? Failure(type: "Discarded", message: "discarded from the dead-letter queue", nonRetryable: true)),
            to: run, &work)
        try await finish(&work)
    }

    private func parkedActivity(runId: String, activityId: Int64, for action: String) throws -> (LiveRun, ActivityRecord) {
        guard let run = runs[runId] else {
            let status = try store.run(runId: runId)?.status.rawValue ?? "unknown to this coordinator"
            throw ActivityNotParkedError(
                message: "cannot \(action) activity \(activityId) of run \(runId): the run is \(status)")
        }
        guard let activity = run.activities[activityId] else {
            throw ActivityNotParkedError(
                message: "cannot \(action) activity \(activityId) of workflow \(run.record.workflowId): it is not pending (already completed, failed or discarded)")
        }
        guard activity.state == .parked else {
            throw ActivityNotParkedError(
                message: "cannot \(action) activity \(activityId) of workflow \(run.record.workflowId): it is \(activity.state.rawValue), not parked")
        }
        return (run, activity)
    }

    /// Answers a query from the run's current state; a closed run is replayed to answer.
    public func query(workflowId: String, name: String, argument: Payload? = nil) async throws -> Payload {
        if let runId = openRunByWorkflowId[workflowId], let run = runs[runId], let instance = run.instance {
            return try guarded(run) { try instance.query(name, argument: argument) }
        }
        guard let record = try store.latestRun(workflowId: workflowId) else {
            throw WorkflowNotFoundError(workflowId: workflowId, detail: "no run with this id")
        }
        if record.status == .blocked {
            throw WorkflowNotFoundError(
                workflowId: workflowId, detail: "cannot query: run \(record.runId) is blocked (\(record.failure?.message ?? "")); `keel unblock` replays it")
        }
        let instance = makeInstance(record, try workflows.definition(named: record.workflowType))
        let events = try store.events(runId: record.runId)
        let marker = self.marker
        func code<T>(_ body: () throws -> T) rethrows -> T {
            try marker?.around(workflowId: record.workflowId, runId: record.runId, lastEventId: record.historyLength, body) ?? body()
        }
        defer { code { instance.evict() } }
        _ = code { instance.replay(events) }
        return try code { try instance.query(name, argument: argument) }
    }

    /// Waits until the workflow's last run closes (following continue-as-new) and returns it.
    public func result(workflowId: String) async throws -> RunRecord {
        guard let latest = try store.latestRun(workflowId: workflowId) else {
            throw WorkflowNotFoundError(workflowId: workflowId, detail: "no run with this id")
        }
        if !latest.status.isOpen, latest.status != .continuedAsNew { return latest }
        return await withCheckedContinuation { continuation in
            completionWaiters[workflowId, default: []].append(continuation)
        }
    }

    private func openRun(_ workflowId: String, for action: String) throws -> LiveRun {
        if let runId = openRunByWorkflowId[workflowId], let run = runs[runId] { return run }
        if let last = try store.latestRun(workflowId: workflowId) {
            throw WorkflowNotFoundError(
                workflowId: workflowId, detail: "cannot \(action): its last run \(last.runId) is \(last.status.rawValue)")
        }
        throw WorkflowNotFoundError(workflowId: workflowId, detail: "cannot \(action): no run with this id")
    }

    // MARK: Worker reports

    /// A worker's report, for ``apply(_:)``.
    public enum WorkerReport: Sendable {
        case started(ActivityStarted)
        case redelivered(ActivityRedelivered)
        /// Answered with whether it was granted (the `Bool` ``commit(_:)`` returns for it).
        case claim(ActivityClaim)
        case heartbeat(ActivityHeartbeat)
        case result(ActivityResult)
    }

    /// Applies worker reports in order, in one transaction (group commit). Returns, per report,
    /// whether it changed anything (false: stale or duplicate, as for ``activityResult(_:)``).
    @discardableResult
    public func apply(_ reports: [WorkerReport]) async throws -> [Bool] {
        var work = Work(now: clock.now())
        let applied = apply(reports, &work)
        try await finish(&work)
        return applied
    }

    private func apply(_ reports: [WorkerReport], _ work: inout Work) -> [Bool] {
        var applied: [Bool] = []
        for report in reports {
            switch report {
            case .started(let message): applied.append(started(message, &work))
            case .redelivered(let message): applied.append(redelivered(message, &work))
            case .claim(let message): applied.append(claim(message, &work))
            case .heartbeat(let message): applied.append(heartbeat(message, &work))
            case .result(let message): applied.append(result(message, &work))
            }
        }
        return applied
    }

    /// Like ``apply(_:)``, but returns once the reports are committed: the caller may acknowledge
    /// them, and publishes the outcome with ``publish(_:)`` (meanwhile the next batch can be
    /// applied: the coordinator keeps committing while confirms are on their way).
    /// Also returns, per report, whether it changed anything (for a claim: whether it was granted).
    public func commit(_ reports: [WorkerReport]) throws -> (outgoing: Outgoing, applied: [Bool]) {
        var work = Work(now: clock.now())
        let applied = apply(reports, &work)
        return (try commit(&work), applied)
    }

    /// A worker began an attempt.
    public func activityStarted(_ message: ActivityStarted) async throws {
        try await apply([.started(message)])
    }

    /// A running attempt is alive; its details go to the next attempt if this one fails.
    public func activityHeartbeat(_ message: ActivityHeartbeat) async throws {
        try await apply([.heartbeat(message)])
    }

    /// An attempt ended. Returns false when the result was stale or a duplicate (already applied,
    /// or for an attempt that timed out); such results change nothing.
    @discardableResult
    public func activityResult(_ message: ActivityResult) async throws -> Bool {
        try await apply([.result(message)])[0]
    }

    /// The run and activity a worker's report names, if the report is about the activity's
    /// current attempt (anything else is stale or a duplicate).
    private func current(_ runId: String, _ activityId: Int64, attempt: Int) -> (LiveRun, ActivityRecord)? {
        guard let run = runs[runId], let activity = run.activities[activityId], activity.attempt == attempt else { return nil }
        return (run, activity)
    }

    private func started(_ message: ActivityStarted, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt),
            activity.state == .scheduled
        else { return false }
        markStarted(&activity, worker: message.worker, in: run, &work)
        return true
    }

    /// RabbitMQ delivered an attempt's task again, so an earlier delivery went unacknowledged
    /// (its worker died or lost its connection), and the worker that got it again did not run
    /// it. An attempt recorded as started may have run: it counts as a failed attempt, and the
    /// retry policy decides on the next (a task that kills its worker every time still ends after
    /// `maximumAttempts`). One never recorded as started did not run (a worker runs a task only
    /// after its `started` report is on the wire): the same attempt goes out again.
    private func redelivered(_ message: ActivityRedelivered, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt)
        else { return false }
        switch activity.state {
        case .scheduled:
            work.batch.outbox.append(task(for: activity, in: run))
            return true
        case .started:
            let failure = Failure(
                type: "TaskRedelivered",
                message: "attempt \(activity.attempt) was delivered again (to \(message.worker)): the worker that started it "
                    + "died or lost its connection to RabbitMQ before acknowledging its task")
            attemptFailed(&activity, failure: failure, kind: .activityFailed, in: run, &work)
            return true
        default:
            return false
        }
    }

    /// A worker asks to run a republished copy of an attempt's task. Granted, and recorded as the
    /// attempt's start, while the attempt waits for a worker; granted again to the same claim
    /// (its first answer may have been lost); refused once the attempt started otherwise: some
    /// worker, maybe this one, runs the other copy.
    private func claim(_ message: ActivityClaim, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt)
        else { return false }
        switch activity.state {
        case .scheduled:
            activity.startedByClaim = message.claimId
            markStarted(&activity, worker: message.worker, in: run, &work)
            return true
        case .started:
            return activity.startedByClaim == message.claimId
        default:
            return false
        }
    }

    private func heartbeat(_ message: ActivityHeartbeat, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt),
            activity.state == .started
        else { return false }
        if let details = message.details { activity.heartbeatDetails = details }
        activity.lastHeartbeatAt = work.now
        if let timeout = activity.options.heartbeatTimeout {
            work.batch.set(TimerRecord(
                runId: run.runId, kind: .heartbeat, seq: activity.activityId,
                fireAt: work.now.addingTimeInterval(timeout), attempt: activity.attempt))
        }
        save(activity, in: run, &work)
        return true
    }

    private func result(_ message: ActivityResult, _ work: inout Work) -> Bool {
        guard case (let run, var activity)? = current(message.runId, message.activityId, attempt: message.attempt),
            activity.state == .scheduled || activity.state == .started
        else {
            // Stale results (an attempt that timed out, a duplicate) are normal; one for an
            // attempt the coordinator never sent is not.
            if let live = runs[message.runId]?.activities[message.activityId], message.attempt > live.attempt {
                logger.warning(
                    "result refused: attempt \(message.attempt) of activity \(live.activityType)#\(live.activityId) was never dispatched (the current attempt is \(live.attempt)); sent by \(message.worker)",
                    metadata: ["run_id": "\(message.runId)"])
                metrics.reportRefused(reason: "not_dispatched")
            }
            return false
        }
        // Only the worker that holds the attempt ends it: a result in another worker's name is
        // forged or misrouted, and applying it would complete the step with a value nobody ran.
        if activity.state == .started, let holder = activity.startedBy, holder != message.worker {
            logger.warning(
                "result refused: attempt \(message.attempt) of activity \(activity.activityType)#\(activity.activityId) was started by \(holder), not by \(message.worker)",
                metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
            metrics.reportRefused(reason: "not_holder")
            return false
        }
        if activity.state == .scheduled {
            markStarted(&activity, worker: message.worker, in: run, &work)
        }
        var outcome = message.outcome
        if let failure = configuration.limits.oversizedResult(message) { outcome = .failed(failure) }
        switch outcome {
        case .completed(let payload):
            metrics.attemptCompleted(activity, now: work.now)
            endActivity(activity, in: run, &work)
            apply(
                HistoryEvent(id: 0, time: work.now, kind: .activityCompleted, ref: activity.activityId,
                             attempt: activity.attempt, payload: payload),
                to: run, &work)
        case .failed(let failure):
            attemptFailed(&activity, failure: failure, kind: .activityFailed, in: run, &work)
        }
        return true
    }

    // MARK: Stall detection

    /// Open runs with an activity that has made no progress for `threshold` seconds: a task no
    /// worker took, or a running attempt that neither heartbeated nor finished. Records the list
    /// for `keel list --status stalled` and returns it with the runs that were not stalled at
    /// the last check. (Runs waiting on a signal or a durable timer are not stalled.)
    public func checkStalls(threshold: Double) throws -> (all: [StalledRun], new: [StalledRun]) {
        let now = clock.now()
        var stalled: [StalledRun] = []
        for run in runs.values where run.record.status == .running {
            for activity in run.activities.values.sorted(by: { $0.activityId < $1.activityId }) {
                let label = "activity \(activity.activityType)#\(activity.activityId) (attempt \(activity.attempt))"
                let reason: String
                let since: Date
                switch activity.state {
                case .scheduled:
                    since = activity.attemptScheduledAt
                    reason = "\(label) has waited \(Int(now.timeIntervalSince(since))) s in task queue \(activity.options.taskQueue): no worker took it"
                case .started:
                    since = max(activity.startedAt ?? activity.attemptScheduledAt, activity.lastHeartbeatAt ?? .distantPast)
                    reason = "\(label) has neither heartbeated nor finished for \(Int(now.timeIntervalSince(since))) s"
                case .backoff, .parked:
                    continue
                }
                if now.timeIntervalSince(since) >= threshold {
                    stalled.append(StalledRun(
                        workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
                        reason: reason, since: since))
                    break
                }
            }
        }
        // A timer long past due has not fired: the coordinator's timer loop is behind or stuck.
        var flagged = Set(stalled.map(\.runId))
        for timer in try store.dueTimers(at: now.addingTimeInterval(-threshold), limit: 1000) where !flagged.contains(timer.runId) {
            guard let run = runs[timer.runId], run.record.status == .running else { continue }
            flagged.insert(timer.runId)
            stalled.append(StalledRun(
                workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
                reason: "\(timer.description) was due \(Int(now.timeIntervalSince(timer.fireAt))) s ago and has not fired",
                since: timer.fireAt))
        }
        let before = Set(stalledRunIds)
        stalledRunIds = flagged
        try store.replaceStalledRuns(stalled)
        return (stalled, stalled.filter { !before.contains($0.runId) })
    }

    // MARK: Timers

    /// Fires every timer that is due. Returns how many fired.
    @discardableResult
    public func fireDueTimers() async throws -> Int {
        let now = clock.now()
        let due = try store.dueTimers(at: now, limit: configuration.timerBatchSize)
        guard !due.isEmpty else { return 0 }
        var work = Work(now: now)
        for timer in due {
            work.batch.deleteTimer(runId: timer.runId, kind: timer.kind, seq: timer.seq)
            guard let run = runs[timer.runId], run.record.status == .running else { continue }
            fire(timer, in: run, &work)
        }
        try await finish(&work)
        return due.count
    }

    /// When the next timer is due, if any.
    public func nextTimerDeadline() throws -> Date? {
        try store.nextTimerDeadline()
    }

    private func fire(_ timer: TimerRecord, in run: LiveRun, _ work: inout Work) {
        let seq = timer.seq
        switch timer.kind {
        case .workflowTimer:
            apply(HistoryEvent(id: 0, time: work.now, kind: .timerFired, ref: seq), to: run, &work)
        case .executionTimeout:
            let failure = Failure(
                type: "WorkflowTimedOut", message: "the workflow execution timeout passed", nonRetryable: true)
            append(HistoryEvent(id: 0, time: work.now, kind: .workflowTimedOut, failure: failure), to: run, &work)
            close(run, status: .timedOut, result: nil, failure: failure, &work)
        case .retry:
            guard var activity = run.activities[seq], activity.state == .backoff else { return }
            // Other activities of the run may have spent the budget during the backoff.
            if let refusal = budgetRefusal(of: activity, in: run, cause: nil) ?? circuitRefusal(of: activity) {
                activityFailedFinally(&activity, failure: refusal, kind: .activityFailed, in: run, &work)
                return
            }
            dispatch(&activity, in: run, &work)
        case .scheduleToStart:
            guard let activity = run.activities[seq], activity.state == .scheduled, activity.attempt == timer.attempt
            else { return }
            timeOut(activity, .scheduleToStart, in: run, &work)
        case .startToClose, .heartbeat:
            guard var activity = run.activities[seq], activity.state == .started, activity.attempt == timer.attempt
            else { return }
            let failure = Failure.timeout(timer.kind == .heartbeat ? .heartbeat : .startToClose)
            attemptFailed(&activity, failure: failure, kind: .activityTimedOut, in: run, &work)
        case .scheduleToClose:
            guard let activity = run.activities[seq], activity.state != .parked else { return }
            timeOut(activity, .scheduleToClose, in: run, &work)
        }
    }

    /// Ends an activity on a timeout that is never retried (schedule-to-start, schedule-to-close).
    private func timeOut(_ activity: ActivityRecord, _ kind: TimeoutKind, in run: LiveRun, _ work: inout Work) {
        var failure = Failure.timeout(kind)
        failure.retryState = .timeout
        var activity = activity
        metrics.attemptFailed(activity, failure: failure, willRetry: false)
        activityFailedFinally(&activity, failure: failure, kind: .activityTimedOut, in: run, &work)
    }

    // MARK: Applying events and commands

    private func makeInstance(_ record: RunRecord, _ definition: WorkflowDefinition) -> WorkflowInstance {
        WorkflowInstance(
            definition: definition,
            info: WorkflowInfo(
                workflowId: record.workflowId, runId: record.runId, workflowType: record.workflowType,
                parentWorkflowId: nil, parentRunId: record.parentRunId),
            randomSeed: record.randomSeed, startTime: record.createdAt,
            payloadLimit: configuration.payloadLimit, logger: logger,
            environment: WorkflowEnvironment(breakers: breakers, providerChain: configuration.providerChain))
    }

    @discardableResult
    private func startRun(
        _ definition: WorkflowDefinition, workflowId: String, input: Payload, options: WorkflowOptions,
        requestId: String?, parent: (runId: String, seq: Int64)?, continuedFrom: RunRecord?, blockedBy: Failure? = nil,
        _ work: inout Work
    ) -> LiveRun {
        let deadline = continuedFrom?.executionDeadline
            ?? options.executionTimeout.map { work.now.addingTimeInterval($0) }
        let record = RunRecord(
            workflowId: workflowId, runId: UUID().uuidString.lowercased(), workflowType: definition.name,
            status: .running, input: input, requestId: requestId,
            parentRunId: parent?.runId ?? continuedFrom?.parentRunId,
            parentSeq: parent?.seq ?? continuedFrom?.parentSeq, continuedFromRunId: continuedFrom?.runId,
            createdAt: work.now, randomSeed: generator.next(), options: options, executionDeadline: deadline)
        let run = LiveRun(record: record)
        startSpan(of: run)
        runs[run.runId] = run
        openRunByWorkflowId[workflowId] = run.runId
        work.touched[run.runId] = run
        metrics.workflowStarted(type: definition.name)
        if let deadline {
            work.batch.set(TimerRecord(runId: run.runId, kind: .executionTimeout, seq: 0, fireAt: deadline))
        }
        let attributes = WorkflowStartedAttributes(
            workflowType: definition.name, workflowId: workflowId, randomSeed: record.randomSeed,
            options: options, parentRunId: record.parentRunId, continuedFromRunId: continuedFrom?.runId)
        let started = HistoryEvent(
            id: 0, time: work.now, kind: .workflowStarted, name: definition.name, payload: input,
            attributes: try? Payload(encoding: attributes, field: "start attributes", limit: .max))
        if let blockedBy {
            // Recorded, not run: its code is what crashed the coordinator.
            append(started, to: run, &work)
            block(run, blockedBy, &work)
            return run
        }
        run.instance = makeInstance(record, definition)
        apply(started, to: run, &work)
        return run
    }

    /// Records `event` and, for a running run, lets the workflow react to it.
    private func apply(_ event: HistoryEvent, to run: LiveRun, _ work: inout Work) {
        let event = append(event, to: run, &work)
        guard run.record.status == .running, let instance = run.instance else { return }
        let activation = guarded(run) { instance.apply(event) }
        if let divergence = activation.nondeterminism {
            guarded(run) { instance.evict() }
            block(run, Failure(divergence), &work)
            return
        }
        process(activation.commands, in: run, &work)
    }

    @discardableResult
    private func append(_ event: HistoryEvent, to run: LiveRun, _ work: inout Work) -> HistoryEvent {
        var event = event
        event.id = run.nextEventId
        event.time = work.now
        run.nextEventId += 1
        work.batch.events.append((run.runId, event))
        run.record.historyLength = event.id
        run.record.updatedAt = work.now
        if let spend = Spend.reported(by: event) {
            run.record.spend += spend
            metrics.spent(spend, workflowType: run.record.workflowType)
        }
        work.touched[run.runId] = run
        if event.id == configuration.historyWarningThreshold {
            logger.warning(
                "run history passed \(event.id) events; replay slows as it grows. Use context.continueAsNew(input:) to start a fresh history.",
                metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
        }
        return event
    }

    private func process(_ commands: [Command], in run: LiveRun, _ work: inout Work) {
        for command in commands {
            guard run.record.status == .running else { return }
            append(command.event(id: 0, time: work.now), to: run, &work)
            switch command {
            case .scheduleActivity(let seq, let type, let input, let options):
                var activity = ActivityRecord(
                    runId: run.runId, activityId: seq, activityType: type, input: input, options: options,
                    scheduledAt: work.now)
                if let timeout = options.scheduleToCloseTimeout {
                    work.batch.set(TimerRecord(
                        runId: run.runId, kind: .scheduleToClose, seq: seq, fireAt: work.now.addingTimeInterval(timeout)))
                }
                dispatch(&activity, in: run, &work)
            case .cancelActivity(let seq):
                if let activity = run.activities[seq] { endActivity(activity, in: run, &work) }
            case .startTimer(let seq, let seconds):
                work.batch.set(TimerRecord(
                    runId: run.runId, kind: .workflowTimer, seq: seq, fireAt: work.now.addingTimeInterval(seconds)))
            case .cancelTimer(let seq):
                work.batch.deleteTimer(runId: run.runId, kind: .workflowTimer, seq: seq)
            case .recordMarker:
                break
            case .startChildWorkflow(let seq, let type, let workflowId, let input, let options):
                startChild(seq: seq, type: type, workflowId: workflowId, input: input, options: options, parent: run, &work)
            case .completeWorkflow(let result):
                close(run, status: .completed, result: result, failure: nil, &work)
            case .failWorkflow(let failure):
                close(run, status: .failed, result: nil, failure: failure, &work)
            case .cancelWorkflow:
                close(run, status: .cancelled, result: nil, failure: Failure(CancelledError()), &work)
            case .continueAsNew(let input):
                close(run, status: .continuedAsNew, result: nil, failure: nil, &work)
                if let definition = try? workflows.definition(named: run.record.workflowType) {
                    startRun(
                        definition, workflowId: run.record.workflowId, input: input, options: run.record.options,
                        requestId: nil, parent: nil, continuedFrom: run.record, &work)
                }
            }
        }
    }

    private func startChild(
        seq: Int64, type: String, workflowId: String, input: Payload, options: WorkflowOptions, parent: LiveRun,
        _ work: inout Work
    ) {
        let refused: Failure?
        if workflowId.utf8.count > configuration.limits.workflowId {
            refused = Failure(LimitError(field: "child workflow id", size: workflowId.utf8.count, limit: configuration.limits.workflowId))
        } else if let openId = openRunByWorkflowId[workflowId] {
            refused = Failure(
                type: "WorkflowAlreadyStarted", message: "child workflow id \(workflowId) has open run \(openId)",
                nonRetryable: true)
        } else if let definition = try? workflows.definition(named: type) {
            startRun(
                definition, workflowId: workflowId, input: input, options: options, requestId: nil,
                parent: (parent.runId, seq), continuedFrom: nil, &work)
            refused = nil
        } else {
            refused = Failure(UnknownTypeError(kind: "workflow", name: type, known: workflows.names))
        }
        if let refused {
            apply(HistoryEvent(id: 0, time: work.now, kind: .childWorkflowFailed, ref: seq, name: type, failure: refused),
                  to: parent, &work)
        }
    }

    private func close(_ run: LiveRun, status: RunStatus, result: Payload?, failure: Failure?, _ work: inout Work) {
        metrics.workflowClosed(type: run.record.workflowType, status: status, historyLength: run.record.historyLength)
        run.record.status = status
        run.record.result = result
        run.record.failure = failure
        run.record.closedAt = work.now
        run.record.updatedAt = work.now
        work.touched[run.runId] = run
        work.batch.clear(runId: run.runId)
        run.activities.removeAll()
        runs.removeValue(forKey: run.runId)
        if openRunByWorkflowId[run.record.workflowId] == run.runId {
            openRunByWorkflowId.removeValue(forKey: run.record.workflowId)
        }
        if let instance = run.instance, instance.outcome == nil { guarded(run) { instance.evict() } }
        run.instance = nil
        work.closed.append(run.record)
        if let span = run.span { RunTracing.endRunSpan(span, run.record, at: work.now) }
        run.span = nil
        if status != .continuedAsNew, let parentId = run.record.parentRunId, let seq = run.record.parentSeq,
            let parent = runs[parentId]
        {
            let event: HistoryEvent
            if status == .completed {
                event = HistoryEvent(
                    id: 0, time: work.now, kind: .childWorkflowCompleted, ref: seq, name: run.record.workflowType,
                    payload: result)
            } else {
                event = HistoryEvent(
                    id: 0, time: work.now, kind: .childWorkflowFailed, ref: seq, name: run.record.workflowType,
                    failure: failure ?? Failure(type: "Workflow\(status.rawValue.capitalized)", message: "child run \(status.rawValue)"))
            }
            apply(event, to: parent, &work)
        }
    }

    private func terminate(_ run: LiveRun, reason: String, _ work: inout Work) {
        let failure = Failure(type: "Terminated", message: reason, nonRetryable: true)
        append(HistoryEvent(id: 0, time: work.now, kind: .workflowTerminated, failure: failure), to: run, &work)
        close(run, status: .terminated, result: nil, failure: failure, &work)
    }

    private func block(_ run: LiveRun, _ failure: Failure, _ work: inout Work) {
        run.instance = nil
        run.record.status = .blocked
        run.record.failure = failure
        run.record.updatedAt = work.now
        work.touched[run.runId] = run
        logger.error(
            "run stopped: \(failure.message)",
            metadata: ["workflow_id": "\(run.record.workflowId)", "run_id": "\(run.runId)"])
    }

    // MARK: Crash quarantine

    /// The failure type of a run quarantined because its workflow code crashed the coordinator.
    static let crashedType = "WorkflowCodeCrashed"

    /// Runs `body`, workflow code of `run`, with the crash marker naming the run.
    private func guarded<T>(_ run: LiveRun, _ body: () throws -> T) rethrows -> T {
        guard let marker else { return try body() }
        return try marker.around(workflowId: run.record.workflowId, runId: run.runId, lastEventId: run.nextEventId - 1, body)
    }

    /// Why `workflowId` must not be run: its code crashed the coordinator in two consecutive
    /// processes. Nil for every other workflow.
    private func quarantine(workflowId: String) -> Failure? {
        guard let crash = lastCrash, crash.count >= 2, CrashMarker.names(crash, workflowId) else { return nil }
        metrics.quarantined()
        struct Details: Encodable { var signal: Int32; var lastEventId: Int64; var crashes: Int32 }
        return Failure(
            type: Self.crashedType,
            message: "the workflow code crashed the coordinator \(crash.count == 2 ? "twice" : "\(crash.count) times") in a row while processing this run: "
                + "\(CrashMarker.describe(signal: crash.signal)), after event \(crash.lastEventId). The run is quarantined; "
                + "fix the code, deploy it, then `keel unblock \(workflowId)` replays it",
            nonRetryable: true,
            details: try? Payload(encoding: Details(signal: crash.signal, lastEventId: crash.lastEventId, crashes: crash.count), field: "crash"))
    }

    /// Replays a blocked run with the code this coordinator has and, if its history replays,
    /// lets it run again. One more crash in its code quarantines it again at once. Throws why it
    /// stays blocked (its history still diverges, or it is not blocked).
    public func unblock(workflowId: String) async throws -> RunRecord {
        let run = try openRun(workflowId, for: "unblock")
        guard run.record.status == .blocked else {
            throw NotBlockedError(message: "workflow \(workflowId): run \(run.runId) is \(run.record.status.rawValue), not blocked")
        }
        let definition = try workflows.definition(named: run.record.workflowType)
        let events = try store.events(runId: run.runId)
        var work = Work(now: clock.now())
        marker?.expectCrash(workflowId: workflowId, runId: run.runId)
        let divergence = resume(run, definition, events, &work)
        try await finish(&work)
        if let divergence {
            throw NotBlockedError(message: "workflow \(workflowId) stays blocked: \(divergence.message)")
        }
        return run.record
    }

    /// Replays `run`'s history with its workflow code and lets it go on from there (a blocked
    /// run is unblocked); or blocks it when the history does not replay, and returns why.
    private func resume(
        _ run: LiveRun, _ definition: WorkflowDefinition, _ events: [HistoryEvent], _ work: inout Work
    ) -> NonDeterminismError? {
        let instance = makeInstance(run.record, definition)
        let activation = guarded(run) { instance.replay(events) }
        if let divergence = activation.nondeterminism {
            guarded(run) { instance.evict() }
            block(run, Failure(divergence), &work)
            return divergence
        }
        run.instance = instance
        if run.record.status == .blocked {
            run.record.status = .running
            run.record.failure = nil
            work.touched[run.runId] = run
            logger.info("run unblocked: its history replays with this code", metadata: ["run_id": "\(run.runId)"])
        }
        process(activation.commands, in: run, &work)
        return nil
    }

    // MARK: Tracing

    private func startSpan(of run: LiveRun) {
        let span = RunTracing.startRunSpan(run.record, tracer: tracer)
        run.span = span
        let headers = RunTracing.headers(of: span, tracer: tracer)
        run.traceHeaders = headers.isEmpty ? nil : headers
    }

    // MARK: Activities

    private func dispatch(_ activity: inout ActivityRecord, in run: LiveRun, _ work: inout Work) {
        activity.attempt += 1
        activity.state = .scheduled
        activity.attemptScheduledAt = work.now
        activity.startedAt = nil
        activity.startedByClaim = nil
        activity.startedBy = nil
        let options = activity.options
        work.batch.outbox.append(task(for: activity, in: run))
        if let timeout = options.scheduleToStartTimeout {
            work.batch.set(TimerRecord(
                runId: run.runId, kind: .scheduleToStart, seq: activity.activityId,
                fireAt: work.now.addingTimeInterval(timeout), attempt: activity.attempt))
        }
        save(activity, in: run, &work)
    }

    /// The task of the activity's current attempt.
    private func task(for activity: ActivityRecord, in run: LiveRun) -> ActivityTask {
        let options = activity.options
        return ActivityTask(
            workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
            activityId: activity.activityId, activityType: activity.activityType, attempt: activity.attempt,
            input: activity.input, taskQueue: options.taskQueue, scheduledAt: activity.scheduledAt,
            attemptScheduledAt: activity.attemptScheduledAt, startToCloseTimeout: options.startToCloseTimeout,
            scheduleToCloseTimeout: options.scheduleToCloseTimeout, heartbeatTimeout: options.heartbeatTimeout,
            heartbeatDetails: activity.heartbeatDetails, trace: run.traceHeaders)
    }

    private func markStarted(_ activity: inout ActivityRecord, worker: String, in run: LiveRun, _ work: inout Work) {
        append(
            HistoryEvent(id: 0, time: work.now, kind: .activityStarted, ref: activity.activityId, name: worker,
                         attempt: activity.attempt),
            to: run, &work)
        metrics.attemptStarted(activity, now: work.now)
        activity.state = .started
        activity.startedAt = work.now
        activity.startedBy = worker
        let seq = activity.activityId
        deleteTimers([.scheduleToStart], of: activity, in: run, &work)
        if let timeout = activity.options.startToCloseTimeout {
            work.batch.set(TimerRecord(
                runId: run.runId, kind: .startToClose, seq: seq, fireAt: work.now.addingTimeInterval(timeout),
                attempt: activity.attempt))
        }
        if let timeout = activity.options.heartbeatTimeout {
            work.batch.set(TimerRecord(
                runId: run.runId, kind: .heartbeat, seq: seq, fireAt: work.now.addingTimeInterval(timeout),
                attempt: activity.attempt))
        }
        save(activity, in: run, &work)
    }

    /// Records a failed attempt and either schedules the next one or ends the activity.
    private func attemptFailed(
        _ activity: inout ActivityRecord, failure: Failure, kind: EventKind, in run: LiveRun, _ work: inout Work
    ) {
        if let refusal = budgetRefusal(of: activity, in: run, cause: failure) {
            metrics.attemptFailed(activity, failure: failure, willRetry: false)
            activityFailedFinally(&activity, failure: refusal, kind: kind, in: run, &work)
            return
        }
        let deadline = activity.options.scheduleToCloseTimeout.map { activity.scheduledAt.addingTimeInterval($0) }
        let decision = activity.options.retryPolicy.decide(
            attempt: activity.attemptsSinceRedrive, failure: failure, now: work.now, deadline: deadline,
            random: Double.random(in: 0..<1, using: &generator))
        var failure = failure
        let seq = activity.activityId
        metrics.attemptFailed(activity, failure: failure, willRetry: decision.willRetry)
        switch decision {
        case .retry(let delay):
            failure.retryState = .willRetry
            failure.nextAttemptAt = work.now.addingTimeInterval(delay)
            // Applied, not only recorded: the workflow counts the attempt's usage (replay does too).
            apply(
                HistoryEvent(id: 0, time: work.now, kind: kind, ref: seq, attempt: activity.attempt, failure: failure),
                to: run, &work)
            activity.state = .backoff
            let providers = ProviderOutcome.reported(in: failure.details).map(\.provider)
            activity.lastProviders = providers.isEmpty ? nil : providers
            activity.startedAt = nil
            activity.startedByClaim = nil
            deleteTimers([.scheduleToStart, .startToClose, .heartbeat], of: activity, in: run, &work)
            work.batch.set(TimerRecord(
                runId: run.runId, kind: .retry, seq: seq, fireAt: work.now.addingTimeInterval(delay),
                attempt: activity.attempt))
            save(activity, in: run, &work)
        case .stop(let state):
            failure.retryState = state
            activityFailedFinally(&activity, failure: failure, kind: kind, in: run, &work)
        }
    }

    /// The failure that takes the place of another attempt of a budgeted activity once the run's
    /// budget is spent (the failed attempt's own usage, in `cause`, included); nil when the
    /// attempt may go.
    private func budgetRefusal(of activity: ActivityRecord, in run: LiveRun, cause: Failure?) -> Failure? {
        guard activity.options.countsAgainstBudget, let limit = run.record.options.budget else { return nil }
        let spent = run.record.spend + (cause?.details.flatMap(Spend.reported(in:)) ?? .zero)
        guard limit.isExhausted(by: spent) else { return nil }
        let error = BudgetExhaustedError(
            budget: Budget(limit: limit, spent: spent), activityType: "another attempt of \(activity.activityType)")
        var failure = Failure(error)
        if let cause { failure.message += "; the last attempt failed with \(cause)" }
        // Keep the cause's details: its usage is counted when this failure is recorded.
        failure.details = cause?.details
        failure.retryState = .nonRetryableFailure
        return failure
    }

    /// The failure that takes the place of a retry when every provider the last attempt called
    /// has its circuit breaker open: retrying would only add to the flood. The failure event is
    /// the recorded decision; replay never asks the breakers.
    private func circuitRefusal(of activity: ActivityRecord) -> Failure? {
        guard let providers = activity.lastProviders, !providers.isEmpty,
            providers.allSatisfy({ breakers.admit($0) == .reject })
        else { return nil }
        return Failure(
            type: "CircuitOpen",
            message: "not retried: the circuit breaker of every provider it called is open (\(providers.joined(separator: ", ")))",
            nonRetryable: true, retryState: .nonRetryableFailure)
    }

    /// Ends an activity whose last attempt failed with no attempt to follow. The activity goes to
    /// the dead-letter queue with its context, in the same transaction; then either the workflow
    /// receives the failure, or (``ActivityOptions/parkOnExhaustion``) the activity is parked
    /// and the workflow waits for an operator's redrive or discard.
    private func activityFailedFinally(
        _ activity: inout ActivityRecord, failure: Failure, kind: EventKind, in run: LiveRun, _ work: inout Work
    ) {
        let seq = activity.activityId
        let park = activity.options.parkOnExhaustion
        metrics.deadLettered(activity, parked: park)
        work.batch.deadLetters.append(DeadLetterEntry(
            workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
            activityId: seq, activityType: activity.activityType, taskQueue: activity.options.taskQueue,
            input: activity.input, failure: failure, attempts: attempts(of: activity, in: run, final: failure, work),
            parked: park, scheduledAt: activity.scheduledAt, deadLetteredAt: work.now))
        guard park else {
            endActivity(activity, in: run, &work)
            apply(
                HistoryEvent(id: 0, time: work.now, kind: kind, ref: seq, attempt: activity.attempt, failure: failure),
                to: run, &work)
            return
        }
        apply(
            HistoryEvent(id: 0, time: work.now, kind: .activityParked, ref: seq, attempt: activity.attempt, failure: failure),
            to: run, &work)
        deleteTimers([.retry, .scheduleToStart, .startToClose, .heartbeat, .scheduleToClose], of: activity, in: run, &work)
        activity.state = .parked
        activity.startedAt = nil
        activity.startedByClaim = nil
        activity.parkedFailure = failure
        save(activity, in: run, &work)
        logger.warning(
            "activity parked after its last attempt failed; `keel dlq redrive` retries it, `keel dlq discard` fails it",
            metadata: ["workflow_id": "\(run.record.workflowId)", "activity": "\(activity.activityType)#\(seq)",
                       "error": "\(failure.type)"])
    }

    /// Every failed attempt of `activity` as its history has it, the last one ending with `final`.
    private func attempts(
        of activity: ActivityRecord, in run: LiveRun, final: Failure, _ work: Work
    ) -> [DeadLetterEntry.Attempt] {
        let seq = activity.activityId
        let committed = (try? store.events(runId: run.runId)) ?? []
        let pending = work.batch.events.lazy.filter { $0.runId == run.runId }.map(\.event)
        var started: [Int: (worker: String?, at: Date)] = [:]
        var attempts: [DeadLetterEntry.Attempt] = []
        for event in committed + pending where event.ref == seq {
            guard let attempt = event.attempt else { continue }
            switch event.kind {
            case .activityStarted:
                started[attempt] = (event.name, event.time)
            case .activityFailed, .activityTimedOut, .activityParked:
                guard let failure = event.failure else { continue }
                attempts.append(DeadLetterEntry.Attempt(
                    attempt: attempt, worker: started[attempt]?.worker, startedAt: started[attempt]?.at,
                    endedAt: event.time, failure: failure))
            default:
                continue
            }
        }
        let last = activity.attempt
        attempts.append(DeadLetterEntry.Attempt(
            attempt: last, worker: started[last]?.worker, startedAt: started[last]?.at, endedAt: work.now, failure: final))
        return attempts
    }

    private func save(_ activity: ActivityRecord, in run: LiveRun, _ work: inout Work) {
        run.activities[activity.activityId] = activity
        work.batch.save(activity)
    }

    private func endActivity(_ activity: ActivityRecord, in run: LiveRun, _ work: inout Work) {
        let seq = activity.activityId
        run.activities.removeValue(forKey: seq)
        work.batch.deleteActivity(runId: run.runId, activityId: seq)
        deleteTimers([.retry, .scheduleToStart, .startToClose, .heartbeat, .scheduleToClose], of: activity, in: run, &work)
    }

    /// Deletes the activity's timers of `kinds` that can exist: a timeout the options leave
    /// unset never had a timer, and a retry timer exists only in backoff. (Saves a statement
    /// per missing timer on the hot path.)
    private func deleteTimers(
        _ kinds: [TimerRecord.Kind], of activity: ActivityRecord, in run: LiveRun, _ work: inout Work
    ) {
        let options = activity.options
        for kind in kinds {
            let armed: Bool
            switch kind {
            case .retry: armed = activity.state == .backoff
            case .scheduleToStart: armed = options.scheduleToStartTimeout != nil
            case .startToClose: armed = options.startToCloseTimeout != nil
            case .heartbeat: armed = options.heartbeatTimeout != nil
            case .scheduleToClose: armed = options.scheduleToCloseTimeout != nil
            case .workflowTimer, .executionTimeout: armed = true
            }
            if armed { work.batch.deleteTimer(runId: run.runId, kind: kind, seq: activity.activityId) }
        }
    }

    // MARK: Commit

    /// Commits the work, wakes waiters of closed runs, then publishes the new tasks.
    private func finish(_ work: inout Work) async throws {
        await publish(try commit(&work))
    }

    /// What a committed unit of work sends: its tasks and dead-letter entries, already in their
    /// outboxes. ``publish(_:)`` sends them; until then ``flushOutbox()`` leaves them alone.
    public struct Outgoing: Sendable {
        var tasks: [ActivityTask] = []
        var deadLetters: [DeadLetterEntry] = []
        var keys: [String] { tasks.map(\.attemptKey) + deadLetters.map(\.id) }
    }

    /// Commits the work and wakes waiters of closed runs.
    private func commit(_ work: inout Work) throws -> Outgoing {
        for run in work.touched.values { work.batch.runs.append(run.record) }
        work.batch.circuitBreakers = breakerChanges.pending.withLock { changes in
            defer { changes.removeAll() }
            return changes
        }
        try store.commit(work.batch)
        for record in work.closed where record.status != .continuedAsNew {
            for waiter in completionWaiters.removeValue(forKey: record.workflowId) ?? [] {
                waiter.resume(returning: record)
            }
        }
        let outgoing = Outgoing(tasks: work.batch.outbox, deadLetters: work.batch.deadLetters)
        publishing.formUnion(outgoing.keys)
        return outgoing
    }

    /// Publishes what a commit produced, then deletes those outbox rows. On failure they stay,
    /// and ``flushOutbox()`` publishes them later.
    @discardableResult
    public func publish(_ outgoing: Outgoing) async -> Bool {
        let (tasks, deadLetters) = (outgoing.tasks, outgoing.deadLetters)
        guard !tasks.isEmpty || !deadLetters.isEmpty else { return true }
        let keys = outgoing.keys
        defer { publishing.subtract(keys) }
        do {
            try await publisher.publish(tasks)
            if !deadLetters.isEmpty { try await publisher.deadLetter(deadLetters) }
            var cleared = StoreBatch()
            cleared.deletedOutbox = tasks.map(\.attemptKey)
            cleared.deletedDeadLetters = deadLetters.map(\.id)
            try store.commit(cleared)
            return true
        } catch {
            logger.warning("publishing \(tasks.count) task(s) and \(deadLetters.count) dead letter(s) failed, kept in the outbox: \(error)")
            return false
        }
    }
}
