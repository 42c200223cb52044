import Foundation
import KeelAMQP
import KeelCore

/// A worker's report on an attempt, as the coordinator applies it. On the wire each is its own
/// message type on `keel.results`, or one of many in a `reports` batch (docs/protocol.md).
public enum WorkerReport: Sendable {
    case started(ActivityStarted)
    case redelivered(ActivityRedelivered)
    /// Answered with whether it was granted.
    case claim(ActivityClaim)
    case heartbeat(ActivityHeartbeat)
    case result(ActivityResult)
}

extension WorkerReport {
    /// The reports one message on `keel.results` carries.
    public static func decode(_ message: AMQPDelivery) throws -> [WorkerReport] {
        switch WireType(rawValue: message.wireType ?? "") {
        case .started:
            return [.started(try Wire.read(message.body, what: "started report") { try ActivityStarted(reading: &$0) })]
        case .redelivered:
            return [
                .redelivered(try Wire.read(message.body, what: "redelivered report") { try ActivityRedelivered(reading: &$0) })
            ]
        case .claim:
            let claim = try Wire.decode(ActivityClaim.self, from: message.body, what: "claim")
            guard message.replyTo != nil else { throw WireError(message: "a claim needs reply_to") }
            return [.claim(claim)]
        case .heartbeat:
            return [.heartbeat(try Wire.read(message.body, what: "heartbeat") { try ActivityHeartbeat(reading: &$0) })]
        case .result:
            return [.result(try Wire.read(message.body, what: "result") { try ActivityResult(reading: &$0) })]
        case .reports:
            let batch = try Wire.read(message.body, what: "reports") { try ReportBatch(reading: &$0) }
            return (batch.started ?? []).map { .started($0) } + (batch.redelivered ?? []).map { .redelivered($0) }
                + (batch.heartbeats ?? []).map { .heartbeat($0) } + (batch.results ?? []).map { .result($0) }
        default:
            throw WireError(
                message:
                    "unknown report type '\(message.type ?? "")'; expected started, redelivered, claim, heartbeat, result or reports"
            )
        }
    }

    /// The message that carries `reports`: one alone as its own type, several as a `reports` batch.
    static func message(for reports: [WorkerReport], route: Route) throws -> AMQPMessage {
        let (exchange, key) = (route.exchange, route.routingKey)
        func message(_ type: WireType, _ json: JSONWriter) -> AMQPMessage {
            .wire(type, body: json.data, exchange: exchange, routingKey: key)
        }
        var json = JSONWriter()
        if reports.count == 1 {
            switch reports[0] {
            case .started(let report):
                try report.write(to: &json)
                return message(.started, json)
            case .redelivered(let report):
                report.write(to: &json)
                return message(.redelivered, json)
            case .heartbeat(let report):
                try report.write(to: &json)
                return message(.heartbeat, json)
            case .result(let report):
                try report.write(to: &json)
                return message(.result, json)
            case .claim: throw WireError(message: "a claim is a request that waits for its answer: ClaimClient sends it")
            }
        }
        var started: [ActivityStarted] = []
        var redelivered: [ActivityRedelivered] = []
        var heartbeats: [ActivityHeartbeat] = []
        var results: [ActivityResult] = []
        for report in reports {
            switch report {
            case .started(let report): started.append(report)
            case .redelivered(let report): redelivered.append(report)
            case .heartbeat(let report): heartbeats.append(report)
            case .result(let report): results.append(report)
            case .claim: throw WireError(message: "a claim is a request that waits for its answer: ClaimClient sends it")
            }
        }
        try ReportBatch(started: started, redelivered: redelivered, heartbeats: heartbeats, results: results).write(to: &json)
        return message(.reports, json)
    }
}

/// Body of a `reports` message: several worker reports in one message. Applied in this order:
/// starts, then redeliveries, then heartbeats, then results.
public struct ReportBatch: Codable, Sendable {
    public var started: [ActivityStarted]?
    public var redelivered: [ActivityRedelivered]?
    public var heartbeats: [ActivityHeartbeat]?
    public var results: [ActivityResult]?

    public init(
        started: [ActivityStarted] = [], redelivered: [ActivityRedelivered] = [], heartbeats: [ActivityHeartbeat] = [],
        results: [ActivityResult] = []
    ) {
        self.started = started.isEmpty ? nil : started
        self.redelivered = redelivered.isEmpty ? nil : redelivered
        self.heartbeats = heartbeats.isEmpty ? nil : heartbeats
        self.results = results.isEmpty ? nil : results
    }
}

/// A worker's report that it began an attempt.
public struct ActivityStarted: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    public var time: Date

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, time: Date) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.time = time
    }
}

/// A worker's request to run a republished task (``ActivityTask/republished``), answered over
/// direct reply-to: granted (and recorded as the attempt's start) only while no copy of the
/// attempt has started, so the two copies of a republished task do not both run.
public struct ActivityClaim: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    /// The same on every retry of one claim: a claim granted before (its answer lost) is
    /// granted again, while the worker that ran the other copy is refused.
    public var claimId: String

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, claimId: String) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.claimId = claimId
    }
}

/// A worker's report that RabbitMQ delivered it a task again (the AMQP `redelivered` flag): an
/// earlier delivery was not acknowledged, so a worker may have run it and died. The worker does
/// not run such a task; the coordinator decides (see ``Coordinator``): an attempt it saw start
/// counts as failed and is retried under its policy, one it did not goes out again unchanged.
///
/// With ``handedBack``, the worker gives back a task it held and never ran, because it cannot
/// start it soon (every slot runs an activity past its start report): the coordinator publishes
/// the attempt again at no cost to it.
public struct ActivityRedelivered: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    /// The worker held the delivery without running it and gives it back (nil: false).
    public var handedBack: Bool?

    public init(runId: String, activityId: Int64, attempt: Int, worker: String, handedBack: Bool = false) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.handedBack = handedBack ? true : nil
    }
}

/// A running attempt's heartbeat.
public struct ActivityHeartbeat: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var details: Payload?

    public init(runId: String, activityId: Int64, attempt: Int, details: Payload?) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.details = details
    }
}

/// The end of one attempt.
public struct ActivityResult: Codable, Sendable, Hashable {
    public enum Outcome: Codable, Sendable, Hashable {
        case completed(Payload)
        case failed(Failure)
    }

    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    public var worker: String
    public var outcome: Outcome
    /// How long the activity ran, by the worker's clock, seconds: sent when no `started` report
    /// went before the result (an activity shorter than the worker's start-report delay), so
    /// that the history still shows when the attempt began.
    public var ranSeconds: Double?

    public init(
        runId: String, activityId: Int64, attempt: Int, worker: String, outcome: Outcome, ranSeconds: Double? = nil
    ) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.worker = worker
        self.outcome = outcome
        self.ranSeconds = ranSeconds
    }
}

extension ActivityResult {
    // The documented wire shape (docs/protocol.md), so workers in any language can report.
    enum CodingKeys: String, CodingKey { case runId, activityId, attempt, worker, status, result, failure, ranSeconds }

    // {"status": "completed", "result": …} or {"status": "failed", "failure": {"type": …, "message": …}}
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let status = try container.decode(String.self, forKey: .status)
        let outcome: Outcome
        switch status {
        case "completed": outcome = .completed(try container.decodeIfPresent(Payload.self, forKey: .result) ?? .null)
        case "failed": outcome = .failed(try container.decode(Failure.self, forKey: .failure))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .status, in: container, debugDescription: "status must be 'completed' or 'failed', not '\(status)'")
        }
        self.init(
            runId: try container.decode(String.self, forKey: .runId),
            activityId: try container.decode(Int64.self, forKey: .activityId),
            attempt: try container.decode(Int.self, forKey: .attempt),
            worker: try container.decodeIfPresent(String.self, forKey: .worker) ?? "unknown",
            outcome: outcome, ranSeconds: try container.decodeIfPresent(Double.self, forKey: .ranSeconds))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(runId, forKey: .runId)
        try container.encode(activityId, forKey: .activityId)
        try container.encode(attempt, forKey: .attempt)
        try container.encode(worker, forKey: .worker)
        try container.encodeIfPresent(ranSeconds, forKey: .ranSeconds)
        switch outcome {
        case .completed(let payload):
            try container.encode("completed", forKey: .status)
            try container.encode(payload, forKey: .result)
        case .failed(let failure):
            try container.encode("failed", forKey: .status)
            try container.encode(failure, forKey: .failure)
        }
    }
}
