import Foundation
import KeelAMQP
import KeelCore
import KeelHistory
import Logging
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

        public init(url: AMQPURL, databasePath: String) {
            self.url = url
            self.databasePath = databasePath
        }
    }

    let configuration: Configuration
    let workflows: WorkflowRegistry
    let logger: Logger
    private let stopped = Mutex(false)

    public init(configuration: Configuration, workflows: WorkflowRegistry, logger: Logger = Logger(label: "keel.coordinator")) {
        self.configuration = configuration
        self.workflows = workflows
        self.logger = logger
    }

    /// Asks `run()` to return after committing what it is doing.
    public func stop() { stopped.withLock { $0 = true } }

    private var isStopped: Bool { stopped.withLock { $0 } }

    public func run() async throws {
        let store = try SQLiteHistoryStore(path: configuration.databasePath, durability: configuration.durability)
        let topology = configuration.topology
        let publisher = AMQPPublisher(url: configuration.url, topology: topology, logger: logger)
        defer { publisher.close() }
        let coordinator = Coordinator(
            store: store, workflows: workflows, publisher: AMQPTaskPublisher(publisher: publisher),
            configuration: configuration.coordinator, logger: logger)
        do {
            try await coordinator.recover()
        } catch let error as AMQPError {
            logger.warning("recovered, but the outbox could not be published yet: \(error)")
        }
        let declare: @Sendable (AMQPConnection) throws -> Void = { try topology.declare(on: $0) }
        let jobs = AMQPConsumer(url: configuration.url, queue: topology.jobsQueue, prefetch: 64, logger: logger, declare: declare)
        let results = AMQPConsumer(
            url: configuration.url, queue: topology.resultsQueue, prefetch: 512, logger: logger, declare: declare)
        jobs.start()
        results.start()
        logger.info("coordinator running: \(configuration.url), history \(configuration.databasePath), workflows \(workflows.names.joined(separator: ", "))")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.serveJobs(jobs, coordinator, publisher) }
            group.addTask { try await self.serveResults(results, coordinator, publisher) }
            group.addTask { try await self.runTimers(coordinator) }
            group.addTask {
                while !self.isStopped { try await Task.sleep(for: .milliseconds(50)) }
                jobs.stop()
                results.stop()
            }
            try await group.waitForAll()
        }
        await coordinator.shutdown()
        logger.info("coordinator stopped")
    }

    private func serveJobs(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        for await delivery in consumer.deliveries {
            let message = delivery.message
            do {
                let reply = try await handleJob(message, coordinator)
                if let reply, let replyTo = message.replyTo {
                    try await publisher.publish([AMQPMessage(
                        exchange: "", routingKey: replyTo, body: try Wire.encode(reply), type: "reply",
                        correlationId: message.correlationId, persistent: false)])
                }
            } catch let error as any KeelError where !(error is StoreError) {
                if let replyTo = message.replyTo {
                    try? await publisher.publish([AMQPMessage(
                        exchange: "", routingKey: replyTo, body: try Wire.encode(JobReply(ok: false, error: Failure(error))),
                        type: "reply", correlationId: message.correlationId, persistent: false)])
                }
                // A request that changes something and cannot succeed as sent is kept, with the
                // reason, in the dead-letter queue; a read-only one, or an operator's redrive or
                // discard (its entry stays in the dead-letter queue), was answered and is done.
                let answered: Set<String> = [WireType.query.rawValue, WireType.describe.rawValue, WireType.redrive.rawValue, WireType.discard.rawValue]
                if message.replyTo == nil || !answered.contains(message.type ?? "") {
                    logger.warning("job \(message.type ?? "?") dead-lettered: \(error)")
                    try await publisher.deadLetter(message, from: publisher.topology.jobsQueue, reason: error.description)
                }
            }
            consumer.ack(delivery)
        }
    }

    private func handleJob(_ message: AMQPDelivery, _ coordinator: Coordinator) async throws -> JobReply? {
        let typeName = message.type ?? message.headers["keel-type"] ?? ""
        guard let type = WireType(rawValue: typeName) else {
            throw WireError(message: "unknown job type '\(typeName)'; expected start, signal, cancel, terminate, query, describe, redrive or discard")
        }
        switch type {
        case .start:
            let job = try Wire.decode(StartJob.self, from: message.body, what: "start job")
            let result = try await coordinator.start(job.request(messageId: message.messageId))
            return JobReply(ok: true, result: try Payload(encoding: result, field: "start result"))
        case .signal:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "signal job")
            guard let name = job.name else { throw WireError(message: "signal job needs 'name'") }
            try await coordinator.signal(workflowId: job.workflowId, name: name, input: job.input ?? .null)
        case .cancel:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "cancel job")
            try await coordinator.cancel(workflowId: job.workflowId)
        case .terminate:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "terminate job")
            try await coordinator.terminate(workflowId: job.workflowId, reason: job.reason ?? "terminated by an operator")
        case .query:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "query job")
            guard let name = job.name else { throw WireError(message: "query job needs 'name'") }
            return JobReply(ok: true, result: try await coordinator.query(workflowId: job.workflowId, name: name, argument: job.input))
        case .redrive, .discard:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "\(type.rawValue) job")
            guard let runId = job.runId, let activityId = job.activityId else {
                throw WireError(message: "\(type.rawValue) job needs 'runId' and 'activityId'")
            }
            if type == .redrive {
                try await coordinator.redrive(runId: runId, activityId: activityId)
            } else {
                try await coordinator.discard(runId: runId, activityId: activityId)
            }
            return JobReply(ok: true)
        case .describe:
            let job = try Wire.decode(WorkflowJob.self, from: message.body, what: "describe job")
            guard let run = try coordinator.store.latestRun(workflowId: job.workflowId) else {
                throw WorkflowNotFoundError(workflowId: job.workflowId, detail: "no run with this id")
            }
            return JobReply(ok: true, run: run)
        default:
            throw WireError(message: "'\(typeName)' messages do not belong on the jobs queue")
        }
        return nil
    }

    private func serveResults(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        for await delivery in consumer.deliveries {
            let message = delivery.message
            do {
                switch WireType(rawValue: message.type ?? message.headers["keel-type"] ?? "") {
                case .started:
                    try await coordinator.activityStarted(Wire.decode(ActivityStarted.self, from: message.body, what: "started report"))
                case .heartbeat:
                    try await coordinator.activityHeartbeat(Wire.decode(ActivityHeartbeat.self, from: message.body, what: "heartbeat"))
                case .result:
                    try await coordinator.activityResult(Wire.decode(ActivityResult.self, from: message.body, what: "result"))
                default:
                    throw WireError(message: "unknown report type '\(message.type ?? "")'; expected started, heartbeat or result")
                }
            } catch let error as WireError {
                logger.warning("report rejected: \(error)")
                try await publisher.deadLetter(message, from: publisher.topology.resultsQueue, reason: error.description)
            }
            consumer.ack(delivery)
        }
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
