import Foundation
import KeelAMQP
import KeelCore
import KeelHistory
import Logging

// The jobs queue: starts (committed in batches), signals, cancels, terminations, queries,
// redrives, discards and unblocks; each applied, answered or refused.
extension CoordinatorService {
    func serveJobs(_ consumer: AMQPConsumer, _ coordinator: Coordinator, _ publisher: AMQPPublisher) async throws {
        let limits = configuration.coordinator.limits
        while let batch = await consumer.nextBatch() {
            // Consecutive starts are committed together; anything else is handled in order after them.
            var starts: [(delivery: AMQPConsumer.Delivery, request: StartRequest)] = []
            var rejected: Set<UInt64> = []
            for delivery in batch {
                let message = delivery.message
                if message.wireType == WireType.start.rawValue {
                    do {
                        try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "start job")
                        // Its fields are checked by the coordinator, before the batch's commit.
                        let job = try Wire.decode(StartJob.self, from: message.body, what: "start job")
                        starts.append((delivery, job.request(messageId: message.messageId)))
                    } catch {
                        await refuse(delivery, error, coordinator, consumer, publisher, &rejected)
                    }
                    continue
                }
                try await startAll(&starts, coordinator, consumer, publisher, &rejected)
                do {
                    try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "job")
                    try authorize(message)
                    await reply(to: message, with: try await handleJob(message, coordinator), from: coordinator, publisher)
                } catch let error as StoreError {
                    throw error
                } catch {
                    await refuse(delivery, error, coordinator, consumer, publisher, &rejected)
                }
            }
            try await startAll(&starts, coordinator, consumer, publisher, &rejected)
            try await replicated()
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
                    await reply(
                        to: start.delivery.message, with: JobReply(ok: true, result: payload), from: coordinator, publisher)
                } catch {
                    logger.warning("start answered without its result: \(error)")
                }
            case .failure(let error as StoreError):
                throw error
            case .failure(let error):
                await refuse(start.delivery, error, coordinator, consumer, publisher, &rejected)
            }
        }
        starts.removeAll()
    }

    /// Answers a request that carries `reply_to`, with the coordinator's epoch (a client skips an
    /// answer from an older epoch than one it has seen). A reply that cannot be sent is logged:
    /// the client's wait ends with its timeout.
    func reply(
        to message: AMQPDelivery, with reply: JobReply?, from coordinator: Coordinator, _ publisher: AMQPPublisher
    )
        async
    {
        guard var reply, let replyTo = message.replyTo else { return }
        reply.coordinatorEpoch = coordinator.configuration.epoch
        do {
            try await replicated()
            try await publisher.publish([
                AMQPMessage(
                    exchange: "", routingKey: replyTo, body: try Wire.encode(reply), type: "reply",
                    correlationId: message.correlationId, persistent: false)
            ])
        } catch {
            logger.warning("could not answer a \(message.type ?? "job") on \(replyTo): \(error)")
        }
    }

    /// Answers a job that cannot succeed as sent with the error. One that changes something is
    /// kept, with the reason, in the dead-letter queue; a read-only one, or an operator's redrive
    /// or discard (its entry stays in the dead-letter queue), was answered and is done.
    private func refuse(
        _ delivery: AMQPConsumer.Delivery, _ error: any Error, _ coordinator: Coordinator, _ consumer: AMQPConsumer,
        _ publisher: AMQPPublisher, _ rejected: inout Set<UInt64>
    ) async {
        let message = delivery.message
        let failure = Failure(error)
        await reply(to: message, with: JobReply(ok: false, error: failure), from: coordinator, publisher)
        // A job that asked for an answer got it and is done; only a start is kept in keel.dead
        // as well (its input would be lost with a client that stopped waiting).
        let answered = message.replyTo != nil && message.wireType != WireType.start.rawValue
        if !answered {
            let refused = RefusedMessages(publisher: publisher, logger: logger)
            if await refused.deadLetter(
                delivery, from: publisher.topology.jobsQueue, reason: failure.description, consumer: consumer)
            {
                rejected.insert(message.deliveryTag)
            }
        } else {
            logger.info("job \(message.type ?? "?") refused: \(failure)")
        }
    }

    /// Jobs that change or end other people's runs: only operators send them, when the
    /// coordinator names its operators. Starts, signals, queries and reads are for any publisher.
    static let operatorJobs: Set<String> = Set(
        ([.cancel, .terminate, .redrive, .discard, .unblock]
            + WireType.scheduleJobs.filter {
                $0 != .scheduleList && $0 != .scheduleDescribe
            }).map(\.rawValue))

    /// Refuses an operator's job from anyone else (by the `user_id` RabbitMQ checked).
    private func authorize(_ message: AMQPDelivery) throws {
        guard let operators = configuration.operators, let type = message.wireType, Self.operatorJobs.contains(type),
            !operators.contains(message.userId ?? "")
        else { return }
        let sender = message.userId.map { "broker user \($0)" } ?? "a publisher that set no user_id"
        throw JobRefusedError(
            message:
                "\(type) refused: only operators (\(operators.sorted().joined(separator: ", "))) may send it, and it came from \(sender)"
        )
    }

    /// Handles a job other than `start` (starts are committed in batches by ``startAll``). The
    /// answer goes to `reply_to`, when the job has one.
    private func handleJob(_ message: AMQPDelivery, _ coordinator: Coordinator) async throws -> JobReply? {
        let typeName = message.wireType ?? ""
        guard let type = WireType(rawValue: typeName), WireType.jobs.contains(type) else {
            throw WireError(
                message: "unknown job type '\(typeName)'; expected \(WireType.jobs.map(\.rawValue).joined(separator: ", "))")
        }
        if WireType.scheduleJobs.contains(type) { return try await handleScheduleJob(type, message, coordinator) }
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
            return JobReply(
                ok: true, result: try await coordinator.query(workflowId: job.workflowId, name: name, argument: job.input))
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

    /// Creates, lists, describes, pauses, unpauses, triggers or deletes a schedule.
    private func handleScheduleJob(
        _ type: WireType, _ message: AMQPDelivery, _ coordinator: Coordinator
    ) async throws
        -> JobReply
    {
        let job = try Wire.decode(ScheduleJob.self, from: message.body, what: "\(type.rawValue) job")
        func name() throws -> String {
            guard let name = job.name, !name.isEmpty else { throw WireError(message: "\(type.rawValue) job needs 'name'") }
            try configuration.coordinator.limits.check(WorkflowJob(workflowId: name), .describe)
            return name
        }
        func reply(_ value: some Encodable) throws -> JobReply {
            JobReply(ok: true, result: try Payload(encoding: value, field: "\(type.rawValue) result"))
        }
        switch type {
        case .scheduleCreate:
            guard let spec = job.schedule else { throw WireError(message: "schedule-create job needs 'schedule'") }
            return try reply(try await coordinator.createSchedule(spec))
        case .scheduleList:
            return try reply(await coordinator.allSchedules())
        case .scheduleDescribe:
            let record = try await coordinator.schedule(named: try name())
            return try reply(ScheduleDescription(schedule: record, upcoming: record.upcoming(after: Date(), count: 5)))
        case .schedulePause:
            return try reply(try await coordinator.pauseSchedule(try name(), note: job.note))
        case .scheduleUnpause:
            return try reply(try await coordinator.unpauseSchedule(try name()))
        case .scheduleTrigger:
            return try reply(try await coordinator.triggerSchedule(try name()))
        default:
            try await coordinator.deleteSchedule(try name())
            return JobReply(ok: true)
        }
    }
}
