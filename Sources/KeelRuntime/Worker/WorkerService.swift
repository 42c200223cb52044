import Foundation
import KeelAMQP
import KeelCore
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import Tracing

/// A worker process's loop for one task queue.
///
/// For each task it runs the activity at once and reports its start only if it outlives
/// ``Configuration/startReportDelay`` (or heartbeats first): a short activity's result stands for
/// its start, and its task is acknowledged once RabbitMQ confirmed the result, so a step costs
/// two broker messages, not three. A longer one publishes `started` when the delay passes and
/// its task is acknowledged once RabbitMQ confirms that, so a long activity never holds an
/// unacknowledged delivery into RabbitMQ's `consumer_timeout`; from then on the coordinator's
/// heartbeat and start-to-close timeouts detect a worker that died. (With a delay of zero, or a
/// task with a schedule-to-start timeout, `started` goes first and the activity runs once it is
/// written to the connection.) A worker that dies before its task is acknowledged leaves the
/// delivery to RabbitMQ, which delivers it again, flagged `redelivered`: a worker never runs
/// such a task but reports it, and the coordinator counts the lost attempt (if it never saw it
/// start, it first sends the same attempt again, once).
public final class WorkerService: Service {
    public struct Configuration: Sendable {
        public var url: AMQPURL
        public var topology: Topology = .fromEnvironment()
        public var taskQueue: String
        public var concurrency: Int
        public var identity: String
        /// How long in-flight activities may take to finish after `stop()`.
        public var shutdownGrace: Duration = .seconds(30)
        /// A file that gets one line per activity execution (`time workflowId runId activityId
        /// attempt worker`), for counting executions across processes (`KEEL_EXECUTION_LOG`).
        public var executionLog: String? = ProcessInfo.processInfo.environment["KEEL_EXECUTION_LOG"]
        /// The tracer for attempt spans (nil: the process's `InstrumentationSystem.tracer`).
        public var tracer: (any Tracer)?
        /// How long an activity runs before its start is reported (`KEEL_START_REPORT_DELAY`,
        /// `--start-report-delay`); zero reports every start before the activity runs.
        public var startReportDelay: Duration = .milliseconds(250)

        public init(url: AMQPURL, taskQueue: String, concurrency: Int, identity: String? = nil) {
            self.url = url
            self.taskQueue = taskQueue
            self.concurrency = max(concurrency, 1)
            self.identity = identity ?? "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        }
    }

    let configuration: Configuration
    let runner: ActivityRunner
    let logger: Logger
    /// Asks the coordinator before running a republished task or one that spends a budget.
    private let claims: ClaimClient
    private let admission: TaskAdmission
    private let stopping = ShutdownSignal()
    /// Switched once the coordinator's epoch was asked at start (answered or not): tasks wait
    /// for it, so that one taken first is decided knowing the epoch (``TaskAdmission``).
    private let epochAsked = ShutdownSignal()
    /// What runs now, for the coordinator's cancels.
    private let attempts = RunningAttempts()
    /// The starts held back for ``Configuration/startReportDelay``.
    private let delayedStarts: DelayedStarts

    public init(configuration: Configuration, activities: ActivityRegistry, logger: Logger = Logger(label: "keel.worker")) {
        self.configuration = configuration
        self.runner = ActivityRunner(activities: activities, identity: configuration.identity)
        self.logger = logger
        admission = TaskAdmission(activities: Set(activities.names))
        delayedStarts = DelayedStarts(delay: configuration.startReportDelay)
        claims = ClaimClient(
            url: configuration.url, topology: configuration.topology, worker: configuration.identity,
            epochs: admission.epochs)
    }

    /// Stops taking tasks; running activities get `shutdownGrace` to finish. A `ServiceGroup`'s
    /// graceful shutdown (SIGTERM) does the same.
    public func stop() { stopping.trigger() }
    private var isStopped: Bool { stopping.isTriggered }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await self.runUntilStopped()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    private func runUntilStopped() async throws {
        let topology = configuration.topology
        let queueName = topology.queue(forTaskQueue: configuration.taskQueue)
        let taskQueue = configuration.taskQueue
        let publisher = AMQPPublisher(url: configuration.url, topology: topology, logger: logger)
        let reports = ReportSender(publisher: publisher)
        let inFlight = InProgress()
        // The prefetch window follows the slots not held by activities whose tasks are
        // acknowledged (ones that outlived the start report): a task taken beyond them would wait,
        // maybe for hours, while another worker could run it (``ActivitySlots``).
        let taking = Mutex<AMQPConsumer?>(nil)
        let slots = ActivitySlots(configuration.concurrency) { [logger, concurrency = configuration.concurrency] window in
            guard let consumer = taking.withLock({ $0 }) else { return }
            consumer.limit(to: window)
            if window == 0 {
                logger.info("every slot (\(concurrency)) runs an activity past its start report: taking no tasks until one ends")
            }
        }
        // Each delivery's task is started on the consumer's thread, not by a loop over batches.
        // One delivery more than the slots: a short activity's task stays unacknowledged until
        // its result is confirmed, and with the prefetch at the concurrency the next task waited
        // in RabbitMQ for that acknowledgement, one step at a time.
        let consumer = AMQPConsumer(
            url: configuration.url, queue: queueName, prefetch: configuration.concurrency + 1, logger: logger,
            declare: { connection in
                try topology.declare(on: connection)
                try topology.declareTaskQueue(taskQueue, on: connection)
            },
            handler: { [self] consumer, delivery in
                inFlight.enter()
                // In line for a slot in the order of the deliveries.
                let turn = slots.reserve()
                attempts.handle { cancellation in
                    // Deliveries beyond the free slots wait here unacknowledged (the prefetch
                    // window keeps them few); RabbitMQ redelivers them if this worker stops.
                    // nil: handed back, unrun.
                    let slot = await turn.slot()
                    var endsLater = false
                    if !self.isStopped {
                        endsLater = await self.handle(
                            delivery, slot, cancellation, consumer, publisher, reports, queueName, done: { inFlight.leave() })
                    }
                    slot?.release()
                    if !endsLater { inFlight.leave() }
                }
            })
        taking.withLock { $0 = consumer }
        let endedOnItsOwn = Mutex(false)
        let controlQueue = topology.controlQueue(worker: configuration.identity)
        let cancels = AMQPConsumer(
            url: configuration.url, queue: controlQueue, prefetch: 256, maxBatch: 256, logger: logger,
            declare: { connection in
                try topology.declare(on: connection)
                try connection.declareExclusiveQueue(controlQueue)
                try connection.bind(queue: controlQueue, exchange: topology.controlExchange, routingKey: "")
            })
        consumer.start()
        cancels.start()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.stopping.wait()
                // Running activities still need their connection for acknowledgements.
                consumer.stopDelivering()
            }
            group.addTask { await self.attempts.serveControl(from: cancels, epochs: self.admission.epochs, logger: self.logger) }
            // Once the coordinator's announcements reach this worker, it asks the epoch; tasks
            // wait for the answer (3 s at most), and without one are claimed before they run
            // until a coordinator says its epoch (TaskAdmission).
            group.addTask {
                if await cancels.consuming() { await self.learnCoordinatorEpoch(reports) }
                self.epochAsked.trigger()
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(3))
                self.epochAsked.trigger()
            }
            if configuration.startReportDelay > .zero { group.addTask { await self.delayedStarts.run() } }
            // Announced once the broker counts this consumer (a SIGTERM before that ends the wait).
            if await consumer.consuming() {
                logger.info(
                    "worker \(configuration.identity) serving \(queueName), concurrency \(configuration.concurrency), activities \(runner.activities.names.joined(separator: ", "))"
                )
            }
            await consumer.deliveriesEnded()
            if !isStopped {
                // The consumer only ends when told to: a loop that ends otherwise must not leave a
                // process that looks alive and serves nothing.
                logger.critical("worker stopping: its consumer of \(queueName) ended on its own")
                stop()
                endedOnItsOwn.withLock { $0 = true }
            }
            // No more tasks are taken: let in-flight activities finish within the grace period,
            // then close the connection (deliveries not taken go back to the queue) and cancel
            // what is left.
            let running = inFlight.count
            if running > 0 {
                logger.info("stopping: waiting for \(running) running activit\(running == 1 ? "y" : "ies")")
                if await !inFlight.drained(within: configuration.shutdownGrace) {
                    logger.warning(
                        "stopping: \(inFlight.count) activities still running after \(configuration.shutdownGrace); cancelled")
                    attempts.cancelAll()
                    if await !inFlight.drained(within: .seconds(5)) {
                        logger.warning("stopping: \(inFlight.count) activities did not end within 5 s of their cancel")
                    }
                }
            }
            consumer.stop()
            cancels.stop()
            group.cancelAll()
        }
        await publisher.closeOffPool()
        claims.close()
        logger.info("worker \(configuration.identity) stopped")
        if endedOnItsOwn.withLock({ $0 }) {
            throw ServiceEndedError(message: "the consumer of \(queueName) ended while the worker was running")
        }
    }

    /// Handles one delivery in the slot `taken` (nil: its turn was handed back, and a task it would
    /// run is given back unrun). Returns true when the delivery ends later, on the publishing
    /// thread, which then calls `done`: a short activity's, whose slot goes back once its result is
    /// in line.
    private func handle(
        _ delivery: AMQPConsumer.Delivery, _ taken: ActivitySlots.Slot?, _ cancellation: AttemptCancellation,
        _ consumer: AMQPConsumer,
        _ publisher: AMQPPublisher, _ reports: ReportSender, _ queueName: String, done: @escaping @Sendable () -> Void
    ) async -> Bool {
        if !epochAsked.isTriggered { await epochAsked.wait() }
        let message = delivery.message
        let task: ActivityTask
        let slot: ActivitySlots.Slot
        switch admission.decide(message) {
        case .deadLetter(let reason):
            await deadLetter(delivery, queueName, reason, publisher, consumer)
            return false
        case .failUnknownActivity(let unknown, let failure):
            try? await reports.send(
                .result(
                    ActivityResult(
                        runId: unknown.runId, activityId: unknown.activityId, attempt: unknown.attempt,
                        worker: configuration.identity,
                        outcome: .failed(failure))), workflowId: unknown.workflowId)
            await deadLetter(delivery, queueName, failure.description, publisher, consumer)
            return false
        case .reportRedelivered(let redelivered):
            await reportUnrun(redelivered, delivery, consumer, reports)
            return false
        case .claim(let claimed):
            guard let taken else {
                await reportUnrun(claimed, handedBack: true, delivery, consumer, reports)
                return false
            }
            switch TaskAdmission.afterClaim(await claim(claimed, reports)) {
            case .run:
                task = claimed
                slot = taken
            case .drop:
                consumer.ack(delivery)
                notRun(claimed, reason: claimed.republished == true ? "claimed_elsewhere" : "ended")
                logger.info(
                    "task \(claimed.attemptKey) not run: the coordinator refused its claim (another worker started the attempt, its run or activity ended while it waited, or its provider has no room left and the attempt waits in the coordinator again)"
                )
                return false
            case .leave:
                return false
            }
        case .run(let admitted):
            guard let taken else {
                await reportUnrun(admitted, handedBack: true, delivery, consumer, reports)
                return false
            }
            task = admitted
            slot = taken
        }
        // A delivery whose connection is already gone comes back (redelivered): reporting its
        // start now would cost its attempt for nothing (seen after broker restarts).
        guard stillCurrent(task, delivery, consumer) else { return false }
        let start = StartedReport()
        let startedAt = Date()
        let identity = configuration.identity
        // Whether the start is reported (by this call or before); false once the result stands for it.
        let reportStart: @Sendable () -> Bool = {
            switch start.decideToSend() {
            case .sentAlready: return true
            case .skipped: return false
            case .sendIt: break
            }
            // Settled on the publishing thread: the task is acknowledged once `started` is confirmed.
            reports.send(
                .started(
                    ActivityStarted(
                        runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: identity,
                        time: startedAt)),
                workflowId: task.workflowId,
                written: { start.wrote() },
                settled: { error in
                    if error == nil {
                        // First: while every slot is taken by such activities, the worker stops
                        // taking tasks before this acknowledgement frees the prefetch window.
                        slot.acknowledgedEarly()
                        consumer.ack(delivery)
                    }
                    start.settle(error)
                })
            return true
        }
        let holdsBackStart = holdsBackStart(task)
        if !holdsBackStart {
            _ = reportStart()
            guard await start.written() else {
                // Never sent: not acknowledged either, so RabbitMQ delivers the task again.
                let error = await start.confirmed().map { "\($0)" } ?? "unknown error"
                logger.error("could not report the start of \(task.attemptKey): \(error)")
                return false
            }
            // The acknowledgement must be able to follow on the connection that delivered the task.
            guard stillCurrent(task, delivery, consumer) else { return false }
        }
        // Logged before the delay starts, so that a start held back is reported at least the delay
        // after the logged time (a loaded machine wrote the line 11 ms late, after the delay began).
        if let path = configuration.executionLog { ExecutionLog.append(task, worker: configuration.identity, to: path) }
        // Reports the start of an activity that outlives the delay.
        let startLater = holdsBackStart ? delayedStarts.schedule { _ = reportStart() } : nil
        let heartbeats = HeartbeatThrottle(task: task) { details in
            // The coordinator takes heartbeats of a started attempt only.
            guard reportStart(), await start.written() else { return }
            try? await reports.send(
                .heartbeat(
                    ActivityHeartbeat(
                        runId: task.runId, activityId: task.activityId, attempt: task.attempt, details: details)),
                workflowId: task.workflowId)
        }
        let running = Meter(label: "keel_worker_activities_running", dimensions: [("task_queue", task.taskQueue)])
        running.increment()
        let span = RunTracing.startAttemptSpan(
            task, headers: message.headers, worker: configuration.identity,
            tracer: configuration.tracer ?? InstrumentationSystem.tracer)
        let started = ContinuousClock.now
        let outcome = await attempts.run(task.attemptKey, cancellation) {
            await runner.run(task, cancellation: cancellation) { details in heartbeats.beat(details) }
        }
        let ran = (ContinuousClock.now - started).seconds
        running.decrement()
        if let startLater { delayedStarts.cancel(startLater) }
        // No start reported yet: the result stands for it, and acknowledges the task.
        let resultStandsForStart = start.skip()
        heartbeats.finish()
        switch outcome {
        case .completed(let result): RunTracing.endAttemptSpan(span, result: result, failure: nil)
        case .failed(let failure): RunTracing.endAttemptSpan(span, result: nil, failure: failure)
        }
        let kind: String
        switch outcome {
        case .completed: kind = "completed"
        case .failed(let failure): kind = failure.type
        }
        Timer(
            label: "keel_worker_activity_duration_seconds",
            dimensions: [("activity_type", task.activityType), ("outcome", kind)]
        ).recordSeconds(ran)
        var result = ActivityResult(
            runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: configuration.identity,
            outcome: outcome, ranSeconds: resultStandsForStart ? ran : nil)
        // The coordinator would turn it into this failure anyway; sending the bytes helps nobody.
        if let failure = admission.limits.oversizedResult(result) { result.outcome = .failed(failure) }
        guard resultStandsForStart else {
            await sendResult(result, after: nil, task, delivery, consumer, reports, start, resultStandsForStart: false)
            return false
        }
        // The usual end of a short activity: its task is acknowledged from the publishing thread
        // once the result is confirmed, and the delivery ends there, without waking a thread of
        // Swift's pool for the confirm. A stopping worker closes its connection only after `done`.
        reports.send(.result(result), workflowId: task.workflowId, acknowledging: (consumer, delivery)) {
            [self, result] error in
            guard let error else { return done() }
            Task {
                await sendResult(result, after: error, task, delivery, consumer, reports, start, resultStandsForStart: true)
                done()
            }
        }
        // Once the result is in line: the next task may run while it is confirmed.
        slot.release()
        return true
    }

    /// Sends the result until it is confirmed (or the worker stops), then acknowledges the task
    /// if the result stands for its start; `after` is why an earlier try failed.
    private func sendResult(
        _ result: ActivityResult, after failure: (any Error)?, _ task: ActivityTask, _ delivery: AMQPConsumer.Delivery,
        _ consumer: AMQPConsumer, _ reports: ReportSender, _ start: StartedReport, resultStandsForStart: Bool
    ) async {
        var delay = 0.5
        var failure = failure
        while true {
            if let error = failure {
                // The coordinator times the attempt out if this never gets through.
                logger.error("could not report the result of \(task.attemptKey): \(error); retrying in \(delay) s")
                if isStopped { return }
                // Not Task.sleep: a cancelled or timed-out attempt leaves this task cancelled.
                await Alarms.shared.sleep(for: .seconds(double: delay))
                delay = min(delay * 2, 30)
            }
            do {
                try await reports.send(.result(result), workflowId: task.workflowId)
                // Done once the task's acknowledgement is queued: a stopping worker closes its
                // connection only after that.
                if resultStandsForStart {
                    consumer.ack(delivery)
                } else if let error = await start.confirmed() {
                    logger.error(
                        "RabbitMQ did not confirm the start of \(task.attemptKey) (\(error)); the task was not acknowledged")
                }
                return
            } catch {
                failure = error
            }
        }
    }

    /// Tells the coordinator that this worker does not run an attempt's task, and acknowledges
    /// it unrun; if the report cannot be sent, the delivery is left to RabbitMQ. Either RabbitMQ
    /// delivered the task again (an earlier delivery may have run), or, `handedBack`, the worker
    /// cannot start it soon: every slot holds an activity whose task is acknowledged already
    /// (``ActivitySlots``), and the coordinator publishes it again at no cost to its attempt.
    /// Held instead, it would wait for a slot while other workers idle, and past RabbitMQ's
    /// `consumer_timeout` the broker would close the channel and deliver it again, which costs
    /// the attempt.
    private func reportUnrun(
        _ task: ActivityTask, handedBack: Bool = false, _ delivery: AMQPConsumer.Delivery, _ consumer: AMQPConsumer,
        _ reports: ReportSender
    ) async {
        do {
            try await reports.send(
                .redelivered(
                    ActivityRedelivered(
                        runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: configuration.identity,
                        handedBack: handedBack)),
                workflowId: task.workflowId)
            consumer.ack(delivery)
            notRun(task, reason: handedBack ? "handed_back" : "redelivered")
            logger.info(
                handedBack
                    ? "task \(task.attemptKey) handed back unrun: every slot runs an activity past its start report"
                    : "task \(task.attemptKey) was delivered again; reported to the coordinator instead of run")
        } catch {
            logger.error(
                "could not \(handedBack ? "hand back" : "report the redelivery of") \(task.attemptKey): \(error); left to RabbitMQ"
            )
        }
    }

    /// Dead-letters a task this worker cannot run (``RefusedMessages``) and acknowledges it.
    private func deadLetter(
        _ delivery: AMQPConsumer.Delivery, _ queueName: String, _ reason: String, _ publisher: AMQPPublisher,
        _ consumer: AMQPConsumer
    ) async {
        let refused = RefusedMessages(publisher: publisher, logger: logger)
        if await !refused.deadLetter(delivery, from: queueName, reason: reason, consumer: consumer) { consumer.ack(delivery) }
    }

    /// Whether the connection that delivered the task still stands (else it is left to its
    /// redelivery).
    private func stillCurrent(_ task: ActivityTask, _ delivery: AMQPConsumer.Delivery, _ consumer: AMQPConsumer) -> Bool {
        guard consumer.isCurrent(delivery) else {
            logger.warning("the connection that delivered \(task.attemptKey) is gone; leaving the task to its redelivery")
            return false
        }
        return true
    }

    /// Whether `task` may run for ``Configuration/startReportDelay`` before its start is
    /// reported; if not, the start is reported before it runs. A task with a schedule-to-start
    /// timeout reports at once, so the coordinator's timer never fires for an attempt that runs.
    private func holdsBackStart(_ task: ActivityTask) -> Bool {
        configuration.startReportDelay > .zero && task.scheduleToStartTimeout == nil
    }

    /// Counts a task this worker took off its queue and deliberately did not run.
    private func notRun(_ task: ActivityTask, reason: String) {
        Counter(label: "keel_worker_tasks_not_run_total", dimensions: [("task_queue", task.taskQueue), ("reason", reason)])
            .increment()
    }

    /// Asks the coordinator's epoch with a claim of no attempt (docs/protocol.md, step 0b),
    /// which it refuses with its epoch; waits 2 s at most. Without an answer (no coordinator
    /// runs yet), tasks are claimed until one answers or announces itself.
    private func learnCoordinatorEpoch(_ reports: ReportSender) async {
        let probe = ActivityClaim(
            runId: "", activityId: 0, attempt: 0, worker: configuration.identity, claimId: "epoch-\(UUID().uuidString)")
        do {
            _ = try await claims.claim(probe, workflowId: "", through: reports, timeout: 2)
        } catch {
            logger.info("no coordinator told its epoch within 2 s (\(error)): tasks are claimed before they run until one does")
        }
    }

    /// Claims a task from the coordinator, asking until it answers (nil: the worker stopped
    /// first).
    private func claim(_ task: ActivityTask, _ reports: ReportSender) async -> TaskAdmission.ClaimAnswer {
        let claim = ActivityClaim(
            runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: configuration.identity,
            claimId: UUID().uuidString)
        while !isStopped {
            do {
                return try await claims.claim(claim, workflowId: task.workflowId, through: reports) ? .granted : .refused
            } catch {
                logger.warning("claiming the task \(task.attemptKey): \(error); asking again")
                try? await Task.sleep(for: .seconds(1))
            }
        }
        return .none
    }
}
