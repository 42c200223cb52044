import Foundation
import KeelAMQP
import KeelCore
import KeelHistory
import Logging
import Metrics
import Synchronization

/// The coordinator process: owns the SQLite history, consumes jobs and worker reports from
/// RabbitMQ, publishes tasks, fires timers. Every message is acknowledged only after its effect
/// is committed.
public final class CoordinatorService: Sendable {
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

        public init(url: AMQPURL, databasePath: String) {
            self.url = url
            self.databasePath = databasePath
        }
    }

    let configuration: Configuration
    let workflows: WorkflowRegistry
    let logger: Logger
    /// Depth, consumers and dispatch rate of the task queues (the console's queues page).
    public let queues: QueueMonitor
    private let stopped = Mutex(false)

    public init(configuration: Configuration, workflows: WorkflowRegistry, logger: Logger = Logger(label: "keel.coordinator")) {
        self.configuration = configuration
        self.workflows = workflows
        self.logger = logger
        queues = QueueMonitor(
            url: configuration.url, topology: configuration.topology, interval: configuration.queueCheckInterval,
            noConsumerAfter: configuration.noConsumerWarning, logger: logger)
    }

    /// Asks `run()` to return after committing what it is doing.
    public func stop() { stopped.withLock { $0 = true } }

    private var isStopped: Bool { stopped.withLock { $0 } }

    public func run() async throws {
        let store = try SQLiteHistoryStore(path: configuration.databasePath, durability: configuration.durability)
        let topology = configuration.topology
        let publisher = AMQPPublisher(url: configuration.url, topology: topology, logger: logger)
        do {
            try await serve(store: store, publisher: publisher)
        } catch {
            await publisher.closeOffPool()
            throw error
        }
        await publisher.closeOffPool()
        logger.info("coordinator stopped")
    }

    private func serve(store: SQLiteHistoryStore, publisher: AMQPPublisher) async throws {
        let topology = configuration.topology
        let monitor = queues
        monitor.start()
        defer { Task { await monitor.stop() } }
        var coordinatorConfiguration = configuration.coordinator
        if coordinatorConfiguration.crashMarkerPath == nil {
            coordinatorConfiguration.crashMarkerPath = configuration.databasePath + "-crash"
        }
        let coordinator = Coordinator(
            store: store, workflows: workflows,
            publisher: AMQPTaskPublisher(publisher: publisher, onDispatch: monitor.countDispatched),
            configuration: coordinatorConfiguration, logger: logger)
        do {
            try await coordinator.recover()
        } catch let error as AMQPError {
            logger.warning("recovered, but the outbox could not be published yet: \(error)")
        }
        let declare: @Sendable (AMQPConnection) throws -> Void = { try topology.declare(on: $0) }
        let jobs = AMQPConsumer(
            url: configuration.url, queue: topology.jobsQueue, prefetch: 512, maxBatch: 256, logger: logger, declare: declare)
        let results = AMQPConsumer(
            url: configuration.url, queue: topology.resultsQueue, prefetch: 1024, maxBatch: 512, logger: logger, declare: declare)
        jobs.start()
        results.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.serveJobs(jobs, coordinator, publisher) }
            group.addTask { try await self.serveResults(results, coordinator, publisher) }
            group.addTask { try await self.runTimers(coordinator) }
            group.addTask { try await self.watchStalls(coordinator) }
            group.addTask {
                while !self.isStopped { try await Task.sleep(for: .milliseconds(50)) }
                jobs.stop()
                results.stop()
            }
            // Announced once the broker counts both consumers.
            if await jobs.consuming(), await results.consuming() {
                logger.info("coordinator running: \(configuration.url), history \(configuration.databasePath), workflows \(workflows.names.joined(separator: ", "))")
            }
            // Each loop runs until the coordinator stops. One that ends before, or throws (the
            // history cannot be written), ends the process with an error, so that a supervisor
            // restarts it, instead of leaving it up with a queue nobody serves.
            do {
                while try await group.next() != nil {
                    if !isStopped { throw ServiceEndedError(message: "a serving loop of the coordinator ended on its own") }
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
        await coordinator.shutdown()
    }

    /// Checks for stalled runs every fifth of the threshold (at most every 30 s): a gauge, and
    /// a log line per run when it becomes stalled.
    private func watchStalls(_ coordinator: Coordinator) async throws {
        let threshold = configuration.stallThreshold
        let interval = min(max(threshold / 5, 0.1), 30)
        while !isStopped {
            do {
                let (all, new) = try await coordinator.checkStalls(threshold: threshold)
                Gauge(label: "keel_workflows_stalled").record(Double(all.count))
                for run in new {
                    logger.warning(
                        "workflow stalled: \(run.reason)",
                        metadata: ["workflow_id": "\(run.workflowId)", "run_id": "\(run.runId)", "workflow_type": "\(run.workflowType)"])
                }
            } catch {
                logger.warning("stall check failed: \(error)")
            }
            var waited = 0.0
            while waited < interval, !isStopped {
                try await Task.sleep(for: .milliseconds(50))
                waited += 0.05
            }
        }
    }

    private func serveJobs(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        let limits = configuration.coordinator.limits
        while let batch = await consumer.nextBatch() {
            // Consecutive starts are committed together; anything else is handled in order after them.
            var starts: [(delivery: AMQPConsumer.Delivery, request: StartRequest)] = []
            var rejected: Set<UInt64> = []
            for delivery in batch {
                let message = delivery.message
                if (message.type ?? message.headers["keel-type"]) == WireType.start.rawValue {
                    do {
                        try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "start job")
                        let job = try Wire.decode(StartJob.self, from: message.body, what: "start job")
                        try limits.check(job)
                        starts.append((delivery, job.request(messageId: message.messageId)))
                    } catch {
                        await refuse(delivery, error, consumer, publisher, &rejected)
                    }
                    continue
                }
                try await startAll(&starts, coordinator, consumer, publisher, &rejected)
                do {
                    try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "job")
                    await reply(to: message, with: try await handleJob(message, coordinator), publisher)
                } catch let error as StoreError {
                    throw error
                } catch {
                    await refuse(delivery, error, consumer, publisher, &rejected)
                }
            }
            try await startAll(&starts, coordinator, consumer, publisher, &rejected)
            consumer.ack(batch, except: rejected)
        }
    }

    /// Starts the runs of `starts` in one transaction, answers each, and empties the list. A
    /// failed commit throws: nothing of the batch is acknowledged, and the process stops.
    private func startAll(
        _ starts: inout [(delivery: AMQPConsumer.Delivery, request: StartRequest)], _ coordinator: Coordinator,
        _ consumer: AMQPConsumer, _ publisher: AMQPPublisher, _ rejected: inout Set<UInt64>
    ) async throws {
        guard !starts.isEmpty else { return }
        let results = try await coordinator.start(starts.map(\.request))
        for (start, result) in zip(starts, results) {
            switch result {
            case .success(let started):
                do {
                    let payload = try Payload(encoding: started, field: "start result")
                    await reply(to: start.delivery.message, with: JobReply(ok: true, result: payload), publisher)
                } catch {
                    logger.warning("start answered without its result: \(error)")
                }
            case .failure(let error as StoreError):
                throw error
            case .failure(let error):
                await refuse(start.delivery, error, consumer, publisher, &rejected)
            }
        }
        starts.removeAll()
    }

    /// Answers a request that carries `reply_to`. A reply that cannot be sent is logged: the
    /// client's wait ends with its timeout.
    private func reply(to message: AMQPDelivery, with reply: JobReply?, _ publisher: AMQPPublisher) async {
        guard let reply, let replyTo = message.replyTo else { return }
        do {
            try await publisher.publish([AMQPMessage(
                exchange: "", routingKey: replyTo, body: try Wire.encode(reply), type: "reply",
                correlationId: message.correlationId, persistent: false)])
        } catch {
            logger.warning("could not answer a \(message.type ?? "job") on \(replyTo): \(error)")
        }
    }

    /// Answers a job that cannot succeed as sent with the error. One that changes something is
    /// kept, with the reason, in the dead-letter queue; a read-only one, or an operator's redrive
    /// or discard (its entry stays in the dead-letter queue), was answered and is done.
    private func refuse(
        _ delivery: AMQPConsumer.Delivery, _ error: any Error, _ consumer: AMQPConsumer, _ publisher: AMQPPublisher,
        _ rejected: inout Set<UInt64>
    ) async {
        let message = delivery.message
        let failure = Failure(error)
        await reply(to: message, with: JobReply(ok: false, error: failure), publisher)
        // A job that asked for an answer got it and is done; only a start is kept in keel.dead
        // as well (its input would be lost with a client that stopped waiting).
        let answered = message.replyTo != nil && (message.type ?? message.headers["keel-type"]) != WireType.start.rawValue
        if !answered {
            let refused = RefusedMessages(publisher: publisher, logger: logger)
            if await refused.deadLetter(delivery, from: publisher.topology.jobsQueue, reason: failure.description, consumer: consumer) {
                rejected.insert(message.deliveryTag)
            }
        } else {
            logger.info("job \(message.type ?? "?") refused: \(failure)")
        }
    }

    /// Handles a job other than `start` (starts are committed in batches by ``startAll``). The
    /// answer goes to `reply_to`, when the job has one.
    private func handleJob(_ message: AMQPDelivery, _ coordinator: Coordinator) async throws -> JobReply? {
        let typeName = message.type ?? message.headers["keel-type"] ?? ""
        guard let type = WireType(rawValue: typeName), WireType.jobs.contains(type) else {
            throw WireError(message: "unknown job type '\(typeName)'; expected \(WireType.jobs.map(\.rawValue).joined(separator: ", "))")
        }
        let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "\(type.rawValue) job")
        try configuration.coordinator.limits.check(job, type)
        switch type {
        case .signal:
            guard let name = job.name else { throw WireError(message: "signal job needs 'name'") }
            try await coordinator.signal(workflowId: job.workflowId, name: name, input: job.input ?? .null)
        case .cancel:
            try await coordinator.cancel(workflowId: job.workflowId)
        case .terminate:
            try await coordinator.terminate(workflowId: job.workflowId, reason: job.reason ?? "terminated by an operator")
        case .query:
            guard let name = job.name else { throw WireError(message: "query job needs 'name'") }
            return JobReply(ok: true, result: try await coordinator.query(workflowId: job.workflowId, name: name, argument: job.input))
        case .redrive, .discard:
            guard let runId = job.runId, let activityId = job.activityId else {
                throw WireError(message: "\(type.rawValue) job needs 'runId' and 'activityId'")
            }
            if type == .redrive {
                try await coordinator.redrive(runId: runId, activityId: activityId)
            } else {
                try await coordinator.discard(runId: runId, activityId: activityId)
            }
        case .unblock:
            return JobReply(ok: true, run: try await coordinator.unblock(workflowId: job.workflowId))
        case .describe:
            guard let run = try coordinator.store.latestRun(workflowId: job.workflowId) else {
                throw WorkflowNotFoundError(workflowId: job.workflowId, detail: "no run with this id")
            }
            return JobReply(ok: true, run: run)
        default:
            throw WireError(message: "'\(typeName)' messages do not belong on the jobs queue")
        }
        return JobReply(ok: true)
    }

    private func serveResults(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        let limits = configuration.coordinator.limits
        let publishing = BoundedTasks(limit: 8)
        while let batch = await consumer.nextBatch() {
            var reports: [Coordinator.WorkerReport] = []
            // Claims are answered once committed: their message and their place in `reports`.
            var claims: [(message: AMQPDelivery, index: Int)] = []
            var rejected: Set<UInt64> = []
            for delivery in batch {
                let message = delivery.message
                do {
                    try limits.checkEnvelope(message, bodyLimit: limits.reportBody, what: "report")
                    let decoded = try WorkerReport.decode(message)
                    for report in decoded { try limits.check(report) }
                    if case .claim = decoded.first { claims.append((message, reports.count)) }
                    reports += decoded
                } catch {
                    let refused = RefusedMessages(publisher: publisher, logger: logger)
                    if await refused.deadLetter(
                        delivery, from: publisher.topology.resultsQueue, reason: Failure(error).description, consumer: consumer)
                    {
                        rejected.insert(message.deliveryTag)
                    }
                }
            }
            // Committed: acknowledge, and publish the next tasks while the next batch is applied.
            let (outgoing, applied) = try await coordinator.commit(reports)
            consumer.ack(batch, except: rejected)
            for claim in claims {
                // Lost with a broken connection, the worker asks again.
                await reply(to: claim.message, with: JobReply(ok: applied[claim.index]), publisher)
            }
            if batch.count < 8 {
                await coordinator.publish(outgoing)  // no backlog: the shortest path for latency
            } else {
                await publishing.add { await coordinator.publish(outgoing) }
            }
        }
        await publishing.finish()
    }

    private func runTimers(_ coordinator: Coordinator) async throws {
        var lastOutboxCheck = ContinuousClock.now
        while !isStopped {
            let fired = try await coordinator.fireDueTimers()
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
