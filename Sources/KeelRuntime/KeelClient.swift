import Foundation
import KeelAMQP
import KeelCore
import Synchronization

/// Talks to a coordinator through RabbitMQ: publishes jobs (confirmed, persistent) and asks
/// queries over direct reply-to. What `keel start`, `keel signal` and friends use.
public final class KeelClient: Sendable {
    let url: AMQPURL
    let topology: Topology
    let publisher: AMQPPublisher
    /// Set once this client has declared the topology for its request/reply connections.
    private let declared = Mutex(false)
    /// The highest coordinator epoch this client's replies showed: an answer from an older one
    /// (a coordinator that lost its lease) is skipped.
    private let epochs = EpochWatermark()

    public init(url: AMQPURL, topology: Topology = .fromEnvironment()) {
        self.url = url
        self.topology = topology
        publisher = AMQPPublisher(url: url, topology: topology)
    }

    public func close() { publisher.close() }

    /// Publishes a start; the message id (default: the request id) de-duplicates repeated publishes.
    public func start(_ request: StartRequest, messageId: String? = nil) async throws {
        let route = topology.jobRoute(workflowId: request.workflowId)
        try await publisher.send(
            .start, StartJob(request), exchange: route.exchange, routingKey: route.routingKey,
            messageId: messageId ?? request.requestId ?? UUID().uuidString)
    }

    /// Publishes many starts in one confirmed batch (each with its request id as message id).
    public func start(_ requests: [StartRequest]) async throws {
        let messages = try requests.map { request in
            let route = topology.jobRoute(workflowId: request.workflowId)
            return try AMQPMessage.wire(
                .start, StartJob(request), exchange: route.exchange, routingKey: route.routingKey,
                messageId: request.requestId ?? UUID().uuidString)
        }
        try await publisher.publish(messages)
    }

    /// Publishes a start and waits for the coordinator's answer: the run it resolved to, or why
    /// it refused (unknown type, id policy, payload too large).
    public func startAndConfirm(_ request: StartRequest, timeout: Double = 30) async throws -> StartResult {
        let reply = try await self.request(
            .start, StartJob(request), persistent: true, messageId: request.requestId, timeout: timeout)
        guard let result = reply.result else { throw WireError(message: "start reply without a result") }
        return try result.decode(StartResult.self, field: "start result")
    }

    /// Sends a signal. With `confirm`, waits for the coordinator's answer and throws its
    /// refusal (no such workflow, the run is closed, the input is too large); without, returns
    /// once RabbitMQ holds the job (a refusal then goes to `keel.dead`).
    public func signal(workflowId: String, name: String, input: Payload, confirm: Bool = false, timeout: Double = 30) async throws
    {
        try await job(.signal, WorkflowJob(workflowId: workflowId, name: name, input: input), confirm: confirm, timeout: timeout)
    }

    /// Asks the open run of `workflowId` to cancel (`confirm`: as for ``signal(workflowId:name:input:confirm:timeout:)``).
    public func cancel(workflowId: String, confirm: Bool = false, timeout: Double = 30) async throws {
        try await job(.cancel, WorkflowJob(workflowId: workflowId), confirm: confirm, timeout: timeout)
    }

    /// Ends the open run of `workflowId` at once (`confirm`: as for ``signal(workflowId:name:input:confirm:timeout:)``).
    public func terminate(workflowId: String, reason: String, confirm: Bool = false, timeout: Double = 30) async throws {
        try await job(.terminate, WorkflowJob(workflowId: workflowId, reason: reason), confirm: confirm, timeout: timeout)
    }

    /// Replays a blocked run with the coordinator's code and lets it run again; throws why it
    /// stays blocked. Returns the run.
    public func unblock(workflowId: String, timeout: Double = 60) async throws -> RunRecord {
        let reply = try await request(.unblock, WorkflowJob(workflowId: workflowId), persistent: true, timeout: timeout)
        guard let run = reply.run else { throw WireError(message: "unblock reply without a run") }
        return run
    }

    private func job(_ type: WireType, _ job: WorkflowJob, confirm: Bool, timeout: Double) async throws {
        if confirm {
            _ = try await request(type, job, persistent: true, messageId: UUID().uuidString, timeout: timeout)
        } else {
            let route = topology.jobRoute(workflowId: job.workflowId)
            try await publisher.send(type, job, exchange: route.exchange, routingKey: route.routingKey)
        }
    }

    /// Asks the coordinator a query; throws the coordinator's error if it could not answer.
    public func query(workflowId: String, name: String, argument: Payload? = nil, timeout: Double = 10) async throws -> Payload {
        let reply = try await request(.query, WorkflowJob(workflowId: workflowId, name: name, input: argument), timeout: timeout)
        return reply.result ?? .null
    }

    /// Asks the coordinator to give a parked activity fresh attempts; throws why it cannot.
    public func redrive(workflowId: String, runId: String, activityId: Int64, timeout: Double = 30) async throws {
        _ = try await request(
            .redrive, WorkflowJob(workflowId: workflowId, runId: runId, activityId: activityId), timeout: timeout)
    }

    /// Asks the coordinator to hand a parked activity's failure to its workflow.
    public func discard(workflowId: String, runId: String, activityId: Int64, timeout: Double = 30) async throws {
        _ = try await request(
            .discard, WorkflowJob(workflowId: workflowId, runId: runId, activityId: activityId), timeout: timeout)
    }

    /// Creates a schedule; throws the coordinator's reason when it is invalid (nothing stored).
    public func createSchedule(_ spec: ScheduleSpec, timeout: Double = 30) async throws -> ScheduleRecord {
        try await scheduleRequest(.scheduleCreate, ScheduleJob(schedule: spec), timeout: timeout)
    }

    public func schedules(timeout: Double = 10) async throws -> [ScheduleRecord] {
        try await scheduleRequest(.scheduleList, ScheduleJob(), timeout: timeout)
    }

    public func describeSchedule(_ name: String, timeout: Double = 10) async throws -> ScheduleDescription {
        try await scheduleRequest(.scheduleDescribe, ScheduleJob(name: name), timeout: timeout)
    }

    public func pauseSchedule(_ name: String, note: String? = nil, timeout: Double = 30) async throws -> ScheduleRecord {
        try await scheduleRequest(.schedulePause, ScheduleJob(name: name, note: note), timeout: timeout)
    }

    public func unpauseSchedule(_ name: String, timeout: Double = 30) async throws -> ScheduleRecord {
        try await scheduleRequest(.scheduleUnpause, ScheduleJob(name: name), timeout: timeout)
    }

    /// Fires the schedule once now, under its overlap policy.
    public func triggerSchedule(_ name: String, timeout: Double = 30) async throws -> ScheduleFiring {
        try await scheduleRequest(.scheduleTrigger, ScheduleJob(name: name), timeout: timeout)
    }

    public func deleteSchedule(_ name: String, timeout: Double = 30) async throws {
        _ = try await request(.scheduleDelete, ScheduleJob(name: name), persistent: true, timeout: timeout)
    }

    private func scheduleRequest<Answer: Decodable>(
        _ type: WireType, _ job: ScheduleJob, timeout: Double
    ) async throws
        -> Answer
    {
        let reply = try await request(type, job, persistent: type != .scheduleList && type != .scheduleDescribe, timeout: timeout)
        guard let result = reply.result else { throw WireError(message: "\(type.rawValue) reply without a result") }
        return try result.decode(Answer.self, field: "\(type.rawValue) result")
    }

    /// The latest run of `workflowId` as the coordinator's store has it.
    public func describe(workflowId: String, timeout: Double = 10) async throws -> RunRecord {
        let reply = try await request(.describe, WorkflowJob(workflowId: workflowId), timeout: timeout)
        guard let run = reply.run else { throw WireError(message: "describe reply without a run") }
        return run
    }

    /// Polls until the workflow's last run is closed (following continue-as-new). A busy
    /// coordinator that answers one poll late does not end the wait; the last such error is
    /// thrown when `timeout` passes.
    public func waitForResult(workflowId: String, timeout: Double = 3600, poll: Double = 0.2) async throws -> RunRecord {
        let deadline = Date().addingTimeInterval(timeout)
        var lastError: (any Error)?
        while true {
            do {
                let run = try await describe(workflowId: workflowId, timeout: min(10, max(deadline.timeIntervalSinceNow, 1)))
                if !run.status.isOpen, run.status != .continuedAsNew { return run }
            } catch let error as Failure where error.type == "WorkflowNotFound" {
                // Not started yet: the start job may still be in the queue.
            } catch let error as WireError {
                lastError = error
            }
            guard Date() < deadline else {
                throw lastError ?? WireError(message: "workflow \(workflowId) did not finish within \(Int(timeout)) s")
            }
            try await Task.sleep(for: .seconds(double: poll))
        }
    }

    private func request<Body: RoutedJob>(
        _ type: WireType, _ job: Body, persistent: Bool = false, messageId: String? = nil, timeout: Double
    ) async throws -> JobReply {
        let url = self.url
        let epochs = self.epochs
        let topology = self.topology
        let route = topology.jobRoute(workflowId: job.routingWorkflowId)
        let mustDeclare = !declared.withLock { $0 }
        let reply: JobReply = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                do {
                    let connection = try AMQPConnection(url: url)
                    defer { connection.close() }
                    // Jobs sent before any coordinator ran wait in the queue instead of failing.
                    // Once per client: waitForResult polls through here.
                    if mustDeclare { try topology.declare(on: connection) }
                    try connection.consume(queue: Topology.replyTo, noAck: true)
                    var message = try AMQPMessage.wire(
                        type, job, exchange: route.exchange, routingKey: route.routingKey, messageId: messageId)
                    message.persistent = persistent
                    if let reply = try connection.ask(message, timeout: timeout, epochs: epochs) {
                        continuation.resume(returning: reply)
                        return
                    }
                    throw WireError(
                        message:
                            "no reply from a coordinator within \(Int(timeout)) s (is `keel coordinator` running against \(url)?)"
                    )
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        declared.withLock { $0 = true }
        if let error = reply.error { throw error }
        return reply
    }
}
