import Foundation
import KeelAMQP
import KeelCore
import KeelHistory
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// The coordinator process: owns the SQLite history, consumes jobs and worker reports from
/// RabbitMQ, publishes tasks, fires timers. Every message is acknowledged only after its effect
/// is committed.
public final class CoordinatorService: Service {
    public struct Configuration: Sendable {
        public var url: AMQPURL
        public var topology: Topology = .fromEnvironment()
        public var databasePath: String
        public var durability: SQLiteHistoryStore.Durability = .normal
        public var coordinator = CoordinatorConfiguration()
        /// Seconds between looks at the task queues' depth and consumers.
        public var queueCheckInterval: Double = 5
        /// A task queue with tasks and no consumer this long is reported.
        public var noConsumerWarning: Double = 30
        /// A run whose activity makes no progress this long is reported as stalled.
        public var stallThreshold: Double = 300
        /// Closed runs older than this many seconds are deleted, in small batches; nil keeps
        /// every run.
        public var retention: Double? = Self.defaultRetention
        public static let defaultRetention: Double = 30 * 86_400
        /// Wait for the namespace's active coordinator to go, then take over, instead of refusing
        /// to start beside it.
        public var standby = false
        /// The broker users whose jobs may cancel, terminate, redrive, discard, unblock and
        /// manage schedules (RabbitMQ checks the user a job carries); nil lets anyone who may
        /// publish to the jobs exchange.
        public var operators: Set<String>?
        /// Whether every write transaction also goes to the namespace's replicated history log
        /// (a stream), which a standby with a file of its own follows.
        public var replication: Replication = .off

        public init(url: AMQPURL, databasePath: String) {
            self.url = url
            self.databasePath = databasePath
        }
    }

    /// `off`: the history is this file alone; `stream`: also the namespace's history stream.
    public enum Replication: String, Sendable, CaseIterable {
        case off, stream
    }

    let configuration: Configuration
    let workflows: WorkflowRegistry
    /// Set once this coordinator replicates its history: what leaves it waits for the log, and
    /// for the lease to be confirmed still its own (``replicated()``).
    private let replication = Mutex<(replicator: HistoryReplicator, lease: CoordinatorLease)?>(nil)
    let logger: Logger
    /// Depth, consumers and dispatch rate of the task queues (the console's queues page).
    public let queues: QueueMonitor
    private let stopping = ShutdownSignal()

    public init(configuration: Configuration, workflows: WorkflowRegistry, logger: Logger = Logger(label: "keel.coordinator")) {
        self.configuration = configuration
        self.workflows = workflows
        self.logger = logger
        queues = QueueMonitor(
            url: configuration.url, topology: configuration.topology, interval: configuration.queueCheckInterval,
            noConsumerAfter: configuration.noConsumerWarning, logger: logger)
    }

    /// Asks `run()` to return after committing what it is doing. A `ServiceGroup`'s graceful
    /// shutdown (SIGTERM) does the same.
    public func stop() { stopping.trigger() }

    var isStopped: Bool { stopping.isTriggered }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await self.runUntilStopped()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    private func runUntilStopped() async throws {
        // With replication, the file is opened first: a standby follows the log into it while
        // it waits for the lease.
        var follower: HistoryFollower?
        var followed: SQLiteHistoryStore?
        if configuration.replication == .stream {
            let connection = try AMQPConnection(url: configuration.url)
            defer { connection.close() }
            try HistoryFollower.declareLog(on: connection, topology: configuration.topology)
            let opened = try SQLiteHistoryStore(path: configuration.databasePath, durability: configuration.durability)
            follower = HistoryFollower(url: configuration.url, topology: configuration.topology, store: opened, logger: logger)
            follower?.start()
            followed = opened
        }
        // One active coordinator per namespace, before anything is acted on or published.
        let stopping = self.stopping
        guard
            let lease = try await CoordinatorLease.acquire(
                url: configuration.url, topology: configuration.topology, standby: configuration.standby, logger: logger,
                stopped: { stopping.isTriggered })
        else {
            follower?.stop()
            return
        }
        defer { lease.release() }
        // Watched from now on, not only once serving: rabbitmq-c sends the lease connection's
        // heartbeats only when it is used, so a long catch-up or recovery without the watch's
        // looks would let the broker drop the lease under a coordinator that goes on.
        let watching = Task { try await lease.watch(logger: logger) }
        defer { watching.cancel() }
        let topology = configuration.topology
        let publisher = AMQPPublisher(url: configuration.url, topology: topology, logger: logger)
        let store = try followed ?? SQLiteHistoryStore(path: configuration.databasePath, durability: configuration.durability)
        // The epoch this coordinator's takeover marker announced in the log: it takes no less.
        var minimumEpoch: Int64 = 0
        if let follower {
            do {
                minimumEpoch = try await takeOverTheLog(store, follower, publisher, lease)
            } catch {
                follower.stop()
                await publisher.closeOffPool()
                throw error
            }
        }
        do {
            try await serve(store: store, publisher: publisher, lease: lease, watching: watching, minimumEpoch: minimumEpoch)
        } catch {
            await publisher.closeOffPool()
            throw error
        }
        await publisher.closeOffPool()
        logger.info("coordinator stopped")
    }

    /// Before a coordinator with replication acts: publishes what its file committed that the
    /// log may lack (a crash came before the confirm), puts its takeover marker in the log and
    /// applies everything before it, then replicates every write of its own. Returns the epoch
    /// the marker announced.
    private func takeOverTheLog(
        _ store: SQLiteHistoryStore, _ follower: HistoryFollower, _ publisher: AMQPPublisher, _ lease: CoordinatorLease
    ) async throws -> Int64 {
        let replicator = HistoryReplicator(publisher: publisher, topology: configuration.topology)
        try await replicator.republish(try store.unconfirmedChanges())
        let started = ContinuousClock.now
        let epoch =
            max(follower.newestEpoch, try store.currentEpoch()?.epoch ?? 0, Int64(Date().timeIntervalSince1970 * 1000)) + 1
        try await follower.catchUp(epoch: epoch, publisher: publisher)
        follower.stop()
        let position = try store.replicationPosition()
        logger.info(
            "history log \(configuration.topology.historyStream): caught up to transaction \(position.seq) in \(started.duration(to: .now)) (\(follower.applied) applied while following); epoch \(epoch) or later from now"
        )
        store.replicate(to: replicator)
        replication.withLock { $0 = (replicator, lease) }
        return epoch
    }

    /// Returns once the history log confirmed every transaction committed so far, and the
    /// lease is still this coordinator's (at once without replication): acknowledgements,
    /// replies and tasks wait for it. With a file of its own, a coordinator paused past its lease
    /// would otherwise acknowledge jobs that the coordinator that took over never sees.
    func replicated() async throws {
        guard let (replicator, lease) = replication.withLock({ $0 }) else { return }
        try await replicator.confirmed()
        try await lease.confirmFresh()
    }

    private func serve(
        store: SQLiteHistoryStore, publisher: AMQPPublisher, lease: CoordinatorLease, watching: Task<Void, any Error>,
        minimumEpoch: Int64
    ) async throws {
        let topology = configuration.topology
        let monitor = queues
        monitor.start()
        defer { Task { await monitor.stop() } }
        var coordinatorConfiguration = configuration.coordinator
        coordinatorConfiguration.startedAttempts = monitor.startedAttempts
        if coordinatorConfiguration.crashMarkerPath == nil {
            coordinatorConfiguration.crashMarkerPath = configuration.databasePath + "-crash"
        }
        // Fencing: a coordinator that lost the lease without knowing it (paused, cut off) can
        // commit nothing more to this history once this one took it.
        let holder = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        coordinatorConfiguration.epoch = try store.takeEpoch(holder: holder, atLeast: minimumEpoch)
        try store.checkpointInBackground()
        logger.info("coordinator epoch \(coordinatorConfiguration.epoch ?? 0) of \(configuration.databasePath)")
        // A step's next task goes out while its commit is written (docs/architecture.md, "The
        // next task goes out while the step is committed"), except with a replicated history
        // log, whose confirm comes first, or with quorum queues, where RabbitMQ is not relied on
        // to deliver the reports of a stopped coordinator again in their first order.
        let sendsAtOnce = configuration.replication == .off && topology.queueType == .classic
        let coordinator = Coordinator(
            store: store, workflows: workflows,
            publisher: AMQPTaskPublisher(
                publisher: publisher, onDispatch: monitor.countDispatched, beforePublishing: { try await self.replicated() },
                sendsAtOnce: sendsAtOnce),
            configuration: coordinatorConfiguration, logger: logger)
        // Before any task goes out again: a worker holding the first copy of a task the previous
        // coordinator published claims it once it knows of this epoch (CoordinatorEpochNotice).
        if let epoch = coordinatorConfiguration.epoch {
            do {
                try await publisher.publish([CoordinatorEpochNotice(coordinatorEpoch: epoch).message(topology: topology)])
            } catch {
                logger.warning("could not tell the workers this coordinator's epoch on \(topology.controlExchange): \(error)")
            }
        }
        do {
            try await coordinator.recover()
        } catch let error as AMQPError {
            logger.warning("recovered, but the outbox could not be published yet: \(error)")
        }
        let declare: @Sendable (AMQPConnection) throws -> Void = { try topology.declare(on: $0) }
        let jobs = AMQPConsumer(
            url: configuration.url, queue: topology.jobsQueue, prefetch: 512, maxBatch: 256, logger: logger, declare: declare)
        // The results loop runs on its consumer's thread: each batch without a wake-up of another.
        let results = AMQPConsumer(
            url: configuration.url, queue: topology.resultsQueue, prefetch: 1024, maxBatch: 512, logger: logger,
            runsTasks: true, declare: declare)
        jobs.start()
        results.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.serveJobs(jobs, coordinator, publisher) }
            group.addTask(executorPreference: results.executor) { try await self.serveResults(results, coordinator, publisher) }
            group.addTask { try await self.runTimers(coordinator, lease) }
            group.addTask { try await self.watchStalls(coordinator, lease) }
            group.addTask {
                // Ends only by throwing (the lease is another coordinator's) or with the coordinator.
                try await withTaskCancellationHandler {
                    try await watching.value
                } onCancel: {
                    watching.cancel()
                }
            }
            if let retention = configuration.retention {
                group.addTask { try await self.pruneClosedRuns(store, olderThan: retention, lease) }
            }
            group.addTask {
                await self.stopping.wait()
                jobs.stop()
                results.stop()
            }
            // Announced once the broker counts both consumers.
            if await jobs.consuming(), await results.consuming() {
                logger.info(
                    "coordinator running: \(configuration.url), history \(configuration.databasePath), workflows \(workflows.names.joined(separator: ", "))"
                )
            }
            // Each loop runs until the coordinator stops. One that ends before, or throws (the
            // history cannot be written), ends the process with an error, so that a supervisor
            // restarts it, instead of leaving it up with a queue nobody serves.
            // Once stopping, the consumers end the serving loops after their last batch, and the
            // timer and stall loops are cancelled.
            do {
                while true {
                    do {
                        guard try await group.next() != nil else { break }
                        if !isStopped { throw ServiceEndedError(message: "a serving loop of the coordinator ended on its own") }
                        group.cancelAll()
                    } catch is CancellationError where isStopped {
                        continue
                    }
                }
            } catch {
                logger.critical("coordinator stopping: \(error)")
                stop()
                jobs.stop()
                results.stop()
                group.cancelAll()
                throw error
            }
        }
        do { try await coordinator.saveCapacity() } catch {
            logger.warning("could not save what was learned of providers' capacity: \(error)")
        }
        await coordinator.shutdown()
    }

    /// Checks for stalled runs every fifth of the threshold (at most every 30 s): a gauge, and
    /// a log line per run when it becomes stalled.
    private func watchStalls(_ coordinator: Coordinator, _ lease: CoordinatorLease) async throws {
        let threshold = configuration.stallThreshold
        let interval = min(max(threshold / 5, 0.1), 30)
        while !Task.isCancelled {
            try await lease.waitUntilHeld()
            do {
                let (all, new) = try await coordinator.checkStalls(threshold: threshold)
                Gauge(label: "keel_workflows_stalled").record(Double(all.count))
                for run in new {
                    logger.warning(
                        "workflow stalled: \(run.reason)",
                        metadata: [
                            "workflow_id": "\(run.workflowId)", "run_id": "\(run.runId)", "workflow_type": "\(run.workflowType)"
                        ])
                }
            } catch {
                logger.warning("stall check failed: \(error)")
            }
            try await Task.sleep(for: .seconds(double: interval))
        }
    }

    /// Deletes runs closed more than `retention` seconds ago: a batch of 500 at a time, off the
    /// coordinator's actor, the next batch at once while there are more, else a minute later
    /// (half the retention, when that is shorter).
    private func pruneClosedRuns(_ store: SQLiteHistoryStore, olderThan retention: Double, _ lease: CoordinatorLease) async throws
    {
        while !Task.isCancelled {
            var deleted = 0
            try await lease.waitUntilHeld()
            do {
                deleted = try await offPool { try store.pruneClosedRuns(closedBefore: Date().addingTimeInterval(-retention)) }
                if deleted > 0 { logger.info("retention: deleted \(deleted) runs closed more than \(Int(retention)) s ago") }
            } catch {
                logger.warning("retention: could not delete old runs: \(error)")
            }
            // A short retention (tests, demos) is checked more often than once a minute.
            try await Task.sleep(for: deleted >= 500 ? .milliseconds(100) : .seconds(double: min(60, max(1, retention / 2))))
        }
    }

    private func runTimers(_ coordinator: Coordinator, _ lease: CoordinatorLease) async throws {
        var lastOutboxCheck = ContinuousClock.now
        while !Task.isCancelled {
            try await lease.waitUntilHeld()
            let fired = try await coordinator.fireDueTimers()
            try await coordinator.fireDueSchedules()
            try await coordinator.admitWaitingIfDue()
            await coordinator.deleteConfirmedOutbox()
            if ContinuousClock.now - lastOutboxCheck > .seconds(1) {
                lastOutboxCheck = ContinuousClock.now
                do { try await coordinator.flushOutbox() } catch { logger.warning("outbox: \(error)") }
            }
            if fired > 0 { continue }
            var pause = 0.05
            if let next = try await coordinator.nextTimerDeadline() {
                pause = min(max(next.timeIntervalSinceNow, 0.001), 0.05)
            }
            try await Task.sleep(for: .seconds(double: pause))
        }
    }
}

/// A serving loop of a Keel process ended while the process was meant to run.
public struct ServiceEndedError: KeelError {
    public var message: String
    public var errorType: String { "ServiceEnded" }
}

/// Runs background tasks, at most `limit` at a time: ``add(_:)`` waits for the oldest when full.
actor BoundedTasks {
    private let limit: Int
    private var running: [Task<Void, Never>] = []

    init(limit: Int) { self.limit = limit }

    func add(_ body: @escaping @Sendable () async -> Void) async {
        if running.count >= limit { await running.removeFirst().value }
        running.append(Task { await body() })
    }

    func finish() async {
        for task in running { await task.value }
        running.removeAll()
    }
}
