import Foundation
import KeelAMQP
import KeelCore

/// Body of a `start` job. Only `workflowType`, `workflowId` and `input` are required.
public struct StartJob: Codable, Sendable {
    public var workflowType: String
    public var workflowId: String
    public var input: Payload
    public var options: WorkflowOptions?
    public var requestId: String?

    public init(_ request: StartRequest) {
        workflowType = request.workflowType
        workflowId = request.workflowId
        input = request.input
        options = request.options
        requestId = request.requestId
    }

    /// The AMQP message id stands in for a missing request id, so a job published twice
    /// makes one run.
    public func request(messageId: String?) -> StartRequest {
        StartRequest(
            workflowType: workflowType, workflowId: workflowId, input: input, options: options ?? .init(),
            requestId: requestId ?? messageId)
    }
}

/// Body of `signal`, `cancel`, `terminate`, `query`, `describe`, `redrive`, `discard` and
/// `unblock` jobs.
public struct WorkflowJob: Codable, Sendable {
    public var workflowId: String
    /// Signal or query name.
    public var name: String?
    /// Signal input or query argument.
    public var input: Payload?
    /// Why a run is terminated.
    public var reason: String?
    /// The run and activity a `redrive` or `discard` job is about.
    public var runId: String?
    public var activityId: Int64?

    public init(
        workflowId: String, name: String? = nil, input: Payload? = nil, reason: String? = nil, runId: String? = nil,
        activityId: Int64? = nil
    ) {
        self.workflowId = workflowId
        self.name = name
        self.input = input
        self.reason = reason
        self.runId = runId
        self.activityId = activityId
    }
}

/// Body of the `schedule-*` jobs: `schedule` for `schedule-create`, `name` for the others
/// (`schedule-list` needs neither), `note` for `schedule-pause`.
public struct ScheduleJob: Codable, Sendable {
    public var name: String?
    public var schedule: ScheduleSpec?
    public var note: String?

    public init(name: String? = nil, schedule: ScheduleSpec? = nil, note: String? = nil) {
        self.name = name
        self.schedule = schedule
        self.note = note
    }
}

/// The answer to `schedule-describe`: the schedule and its next firings.
public struct ScheduleDescription: Codable, Sendable {
    public var schedule: ScheduleRecord
    public var upcoming: [Date]

    public init(schedule: ScheduleRecord, upcoming: [Date]) {
        self.schedule = schedule
        self.upcoming = upcoming
    }
}

/// The reply to a `query` or `describe` job.
public struct JobReply: Codable, Sendable {
    public var ok: Bool
    public var result: Payload?
    public var run: RunRecord?
    public var error: Failure?
    /// The epoch of the coordinator that answered (absent from one without a history lease).
    /// A client skips an answer from an older epoch than one it has seen: a coordinator that
    /// lost its lease while paused may answer late.
    public var coordinatorEpoch: Int64?

    public init(ok: Bool, result: Payload? = nil, run: RunRecord? = nil, error: Failure? = nil) {
        self.ok = ok
        self.result = result
        self.run = run
        self.error = error
    }
}

extension AMQPConnection {
    /// Publishes `message` with direct reply-to and a correlation id of its own, and waits for
    /// the answer; nil when none came within `timeout` seconds. The connection must consume
    /// ``Topology/replyTo``; answers to earlier requests that timed out are skipped.
    /// An answer from an older coordinator epoch than `epochs` has seen is skipped, and the wait
    /// goes on for the current coordinator's.
    func ask(_ message: AMQPMessage, timeout: Double, epochs: EpochWatermark) throws -> JobReply? {
        var message = message
        let correlation = UUID().uuidString
        message.replyTo = Topology.replyTo
        message.correlationId = correlation
        try publish(message)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let delivery = try next(timeout: 0.2), delivery.correlationId == correlation else { continue }
            let reply = try Wire.decode(JobReply.self, from: delivery.body, what: "reply")
            if epochs.isStale(reply.coordinatorEpoch) { continue }
            return reply
        }
        return nil
    }
}

/// A job body that names the workflow it is about, for ``Topology/jobRoute(workflowId:)``.
protocol RoutedJob: Encodable, Sendable {
    var routingWorkflowId: String? { get }
}

extension StartJob: RoutedJob { var routingWorkflowId: String? { workflowId } }
extension WorkflowJob: RoutedJob { var routingWorkflowId: String? { workflowId } }
extension ScheduleJob: RoutedJob { var routingWorkflowId: String? { nil } }
