import Foundation
import KeelAMQP
import KeelCore

/// What one message may carry, checked when it arrives and before anything it asks for is
/// committed: a value the history, an AMQP header or a short-string property cannot hold is
/// refused at the door with the field and the limit named, instead of being committed and then
/// failing to publish forever. docs/protocol.md lists every limit.
public struct MessageLimits: Sendable, Hashable {
    /// Largest JSON payload: a workflow input, a signal input, a query argument, an activity
    /// result or heartbeat details.
    public var payload: Int
    /// A workflow id travels in a dead letter's `keel-workflow-id` header.
    public var workflowId = 1_000
    /// A request id is stored with its run and may come from the AMQP `message_id` (255 at most).
    public var requestId = 1_000
    /// Workflow, activity, signal and query names, task queues, worker identities, claim ids, run
    /// ids and failure types.
    public var name = 255
    /// A terminate reason.
    public var reason = 4_096
    /// A failure's message.
    public var failureMessage = 32_768
    /// All string headers of one message together (names and values).
    public var headers = 16_384

    public init(payload: Int = Payload.defaultSizeLimit) { self.payload = payload }

    /// A job body: one payload and the fields around it.
    public var jobBody: Int { payload + 65_536 }
    /// A worker-report body: a `reports` batch may carry a few results.
    public var reportBody: Int { 4 * payload + 65_536 }

    /// Throws when the message as a whole is larger than `bodyLimit` or its headers are too
    /// large; checked before the body is parsed.
    public func checkEnvelope(_ message: AMQPDelivery, bodyLimit: Int, what: String) throws {
        if message.body.count > bodyLimit {
            throw LimitError.tooLarge("\(what) body", size: message.body.count, limit: bodyLimit)
        }
        if message.headerBytes > headers {
            throw LimitError.tooLarge("\(what) headers", size: message.headerBytes, limit: headers)
        }
    }

    public func check(_ job: StartJob) throws {
        try check(job.workflowType, "workflowType", limit: name)
        try check(job.workflowId, "workflowId", limit: workflowId, allowEmpty: false)
        try check(job.requestId, "requestId", limit: requestId)
        try check(job.input, "input of workflow \(job.workflowType.prefix(name))")
        try job.options?.validate()
    }

    public func check(_ job: WorkflowJob, _ type: WireType) throws {
        try check(job.workflowId, "workflowId", limit: workflowId, allowEmpty: type == .redrive || type == .discard)
        try check(job.name, type == .query ? "query name" : "signal name", limit: name)
        try check(
            job.input,
            type == .query
                ? "argument of query \((job.name ?? "").prefix(name))" : "input of signal \((job.name ?? "").prefix(name))")
        try check(job.reason, "reason", limit: reason)
        try check(job.runId, "runId", limit: name)
    }

    public func check(_ report: Coordinator.WorkerReport) throws {
        switch report {
        case .started(let report):
            try check(report.runId, "runId", limit: name)
            try check(report.worker, "worker", limit: name)
        case .redelivered(let report):
            try check(report.runId, "runId", limit: name)
            try check(report.worker, "worker", limit: name)
        case .claim(let claim):
            try check(claim.runId, "runId", limit: name)
            try check(claim.worker, "worker", limit: name)
            try check(claim.claimId, "claimId", limit: name)
        case .heartbeat(let heartbeat):
            try check(heartbeat.runId, "runId", limit: name)
            try check(heartbeat.details, "heartbeat details")
        case .result(let result):
            try check(result.runId, "runId", limit: name)
            try check(result.worker, "worker", limit: name)
            if case .failed(let failure) = result.outcome {
                try check(failure.type, "failure type", limit: name)
                try check(failure.message, "failure message", limit: failureMessage)
                try check(failure.details, "failure details")
                if let delay = failure.nextRetryDelay, !(delay >= 0 && delay <= Self.longestTimeout) {
                    throw LimitError.seconds("failure.nextRetryDelay", delay)
                }
            }
        // A completed result over the payload limit is not refused here: it becomes the
        // attempt's failure (``oversizedResult(_:)``), so the workflow learns at once.
        }
    }

    /// A task as a worker receives it: ids and names that fit, payloads within the limit, and
    /// timeouts that are positive, finite numbers of seconds.
    public func check(_ task: ActivityTask) throws {
        try check(task.workflowId, "workflowId", limit: workflowId, allowEmpty: false)
        try check(task.runId, "runId", limit: name, allowEmpty: false)
        try check(task.activityType, "activityType", limit: name, allowEmpty: false)
        try check(task.taskQueue, "taskQueue", limit: name)
        try check(task.input, "input of activity \(task.activityType.prefix(name))")
        try check(task.heartbeatDetails, "heartbeatDetails")
        try checkTimeout(task.startToCloseTimeout, "startToCloseTimeout")
        try checkTimeout(task.scheduleToCloseTimeout, "scheduleToCloseTimeout")
        try checkTimeout(task.heartbeatTimeout, "heartbeatTimeout")
    }

    /// Ten years, in seconds: no timeout is longer.
    public static let longestTimeout: Double = 315_360_000

    /// The failure that replaces a completed result too large to keep; nil when it fits.
    public func oversizedResult(_ result: ActivityResult) -> Failure? {
        guard case .completed(let value) = result.outcome, value.data.count > payload else { return nil }
        return Failure(
            type: "PayloadTooLarge",
            message: "the activity's result is \(value.data.count) bytes, over the \(payload)-byte payload limit; "
                + "store large data elsewhere (a file, an object store) and return a reference",
            nonRetryable: true)
    }

    /// A timeout is a positive, finite number of seconds, ten years at most.
    private func checkTimeout(_ seconds: Double?, _ field: String) throws {
        if let seconds, !(seconds > 0 && seconds <= Self.longestTimeout) { throw LimitError.seconds(field, seconds) }
    }

    private func check(_ value: String?, _ field: String, limit: Int, allowEmpty: Bool = true) throws {
        guard let value else { return }
        if !allowEmpty, value.isEmpty { throw LimitError.empty(field) }
        let size = value.utf8.count
        if size > limit { throw LimitError.tooLarge(field, size: size, limit: limit) }
    }

    /// `field` is worked out only for the error: a task's names it after its activity type, and
    /// every task is checked.
    private func check(_ value: Payload?, _ field: @autoclosure () -> String) throws {
        guard let value, value.data.count > payload else { return }
        let field = field()
        throw PayloadError(
            field: field, kind: .tooLarge,
            message: "\(field) is \(value.data.count) bytes, over the \(payload)-byte payload limit; "
                + "store large data elsewhere (a file, an object store) and pass a reference")
    }
}

/// A field of a message is outside what Keel accepts: too long, empty where a value is required,
/// or a number out of its range.
public struct LimitError: KeelError {
    public var field: String
    public var message: String
    public var errorType: String { "LimitExceeded" }
    public var isNonRetryable: Bool { true }

    public static func tooLarge(_ field: String, size: Int, limit: Int) -> LimitError {
        LimitError(field: field, message: "\(field) is \(size) bytes, over the \(limit)-byte limit")
    }

    public static func empty(_ field: String) -> LimitError {
        LimitError(field: field, message: "\(field) must not be empty")
    }

    /// A number of seconds outside what a timeout or delay may be.
    static func seconds(_ field: String, _ value: Double) -> LimitError {
        LimitError(
            field: field,
            message:
                "\(field) is \(value); it must be a number of seconds between 0 and \(Int(MessageLimits.longestTimeout)) (ten years)"
        )
    }
}
