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
    /// Publishes settled, from any thread (``settled(_:_:)``), not yet taken in: confirmed
    /// outbox rows are deleted with the next commit (or by ``deleteConfirmedOutbox()`` when none
    /// comes), since a transaction of their own for every publish wrote the outbox's pages to the
    /// log a second time. Their keys stay in ``publishing`` until then.
    nonisolated let settledPublishes = Mutex(SettledPublishes())
    /// Tasks decided again from reports RabbitMQ delivered a second time, by attempt key: their
    /// outbox rows wait until then for ``flushOutbox()``, so that a copy an earlier coordinator
    /// sent has time to report its start (``redeliveredTaskDelay``).
    var heldTasks: [String: Date] = [:]
    /// How long a task decided again from a redelivered report waits before it is published
    /// (to be claimed): longer than a worker waits before it reports a start (250 ms by default,
    /// `--start-report-delay`), so that a copy an earlier coordinator sent before it stopped is
    /// heard of first, and this one, its attempt no longer waiting, is not sent at all.
    public static let redeliveredTaskDelay: TimeInterval = 2
    /// Runs found stalled by the last ``checkStalls(threshold:)``.
    var stalledRunIds: Set<String> = []
    /// Activity options as scheduled events record them: the runs of a pipeline share their
    /// activities' options, and encoding them once per run was 1.6 % of the coordinator's CPU in
    /// `bench throughput`.
    let encodedActivityOptions = RecentEncodings<ActivityOptions, Payload?>()
    /// Provider circuit breakers shared by every run of this coordinator.
    public nonisolated let breakers: CircuitBreakers
    /// Breaker state changes not yet committed (they happen while a unit of work runs).
    let breakerChanges = BreakerChanges()
    let metrics = CoordinatorMetrics()
    /// Attempts waiting for capacity, providers' capacity, what admitted attempts hold.
    var admission: AdmissionState
    /// The schedules, by name (loaded by ``recover()``).
    var schedules: [String: ScheduleRecord] = [:]
    /// Names the run whose workflow code is running, for the next process if this one crashes.
    let marker: CrashMarker?
    /// The run whose code was running when the previous coordinator crashed, if one was.
    var lastCrash: CrashMarker.Crash? { marker?.lastCrash }

    final class BreakerChanges: Sendable {
        let pending = Mutex<[CircuitBreakerSnapshot]>([])
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
        admission = AdmissionState(weights: configuration.capacity.fairnessWeights)
        var marker: CrashMarker?
        if let path = configuration.crashMarkerPath {
            do { marker = try CrashMarker(path: path) } catch {
                logger.error("crash quarantine is off: \(error)")
            }
        }
        self.marker = marker
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

    /// Releases every in-memory run (their state is in the store). For shutdown and tests.
    public func shutdown() {
        deleteConfirmedOutbox()
        for run in runs.values { guarded(run) { run.instance?.evict() } }
        runs.removeAll()
        openRunByWorkflowId.removeAll()
    }
}
