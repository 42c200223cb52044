import Foundation
import KeelCore

// Worker reports on the wire (docs/protocol.md, "Serving a task queue"), written and read by
// hand: the same JSON as `Wire.encode` and `Wire.decode` of these types, for the messages every
// step sends back. A failure, rare on this path, goes through Foundation's coder as before.

/// The members that say which attempt a report is about, and (all but heartbeats) which worker
/// sent it, read the same way in every report.
private struct AttemptMembers {
    var runId: String?
    var activityId: Int64?
    var attempt: Int?
    var worker: String?

    /// Reads the value of `key` when it is one of these; false for any other member.
    mutating func read(_ key: String, _ json: inout JSONReader) throws -> Bool {
        switch key {
        case "runId": runId = try json.readString()
        case "activityId": activityId = try json.readInteger()
        case "attempt": attempt = try json.readInt()
        case "worker": worker = try json.readString()
        default: return false
        }
        return true
    }
}
extension ActivityStarted {
    func write(to json: inout JSONWriter) throws {
        try json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            json.member("runId", runId)
            try json.member("time", time)
            json.member("worker", worker)
        }
    }

    init(reading reader: inout JSONReader) throws {
        var members = AttemptMembers()
        var time: Date?
        try reader.readObject { key, json in
            if try json.readNull() || members.read(key, &json) { return }
            if key == "time" { time = try json.readDate() } else { try json.skipValue() }
        }
        self.init(
            runId: try reader.required(members.runId, "runId"),
            activityId: try reader.required(members.activityId, "activityId"),
            attempt: try reader.required(members.attempt, "attempt"), worker: try reader.required(members.worker, "worker"),
            time: try reader.required(time, "time"))
    }
}

extension ActivityRedelivered {
    func write(to json: inout JSONWriter) {
        json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            if let handedBack { json.member("handedBack", handedBack) }
            json.member("runId", runId)
            json.member("worker", worker)
        }
    }

    init(reading reader: inout JSONReader) throws {
        var members = AttemptMembers()
        var handedBack: Bool?
        try reader.readObject { key, json in
            if try json.readNull() || members.read(key, &json) { return }
            if key == "handedBack" {
                handedBack = try json.readBool()
                return
            }
            try json.skipValue()
        }
        self.init(
            runId: try reader.required(members.runId, "runId"),
            activityId: try reader.required(members.activityId, "activityId"),
            attempt: try reader.required(members.attempt, "attempt"), worker: try reader.required(members.worker, "worker"),
            handedBack: handedBack ?? false)
    }
}

extension ActivityHeartbeat {
    func write(to json: inout JSONWriter) throws {
        try json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            try json.member("details", details)
            json.member("runId", runId)
        }
    }

    init(reading reader: inout JSONReader) throws {
        var members = AttemptMembers()
        var details: Payload?
        try reader.readObject { key, json in
            // A heartbeat names no worker: a `worker` member is ignored, as before.
            if try json.readNull() || (key != "worker" && members.read(key, &json)) { return }
            if key == "details" { details = Payload(data: try json.readRaw()) } else { try json.skipValue() }
        }
        self.init(
            runId: try reader.required(members.runId, "runId"),
            activityId: try reader.required(members.activityId, "activityId"),
            attempt: try reader.required(members.attempt, "attempt"), details: details)
    }
}

extension ActivityResult {
    func write(to json: inout JSONWriter) throws {
        try json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            // In the order of their names, as Foundation's coder writes them (`Wire`).
            let status: String
            switch outcome {
            case .completed(let payload):
                try json.member("ranSeconds", ranSeconds)
                try json.member("result", payload)
                status = "completed"
            case .failed(let failure):
                try json.member("failure", Payload(data: try Wire.encode(failure)))
                try json.member("ranSeconds", ranSeconds)
                status = "failed"
            }
            json.member("runId", runId)
            json.member("status", status)
            json.member("worker", worker)
        }
    }

    /// `worker` may be absent (`unknown`), and `result` too (`null`), as in `init(from:)`.
    init(reading reader: inout JSONReader) throws {
        var members = AttemptMembers()
        var status: String?
        var result: Payload?
        var ranSeconds: Double?
        var failure: (body: Data, offset: Int)?
        try reader.readObject { key, json in
            if key == "result" {
                result = Payload(data: try json.readRaw())
                return
            }
            if try json.readNull() || members.read(key, &json) { return }
            switch key {
            case "status": status = try json.readString()
            case "ranSeconds": ranSeconds = try json.readNumber()
            case "failure": failure = (try json.readRaw(), json.offset)
            default: try json.skipValue()
            }
        }
        let outcome: Outcome
        switch try reader.required(status, "status") {
        case "completed": outcome = .completed(result ?? .null)
        case "failed":
            let (body, offset) = try reader.required(failure, "failure")
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .secondsSince1970
            do {
                outcome = .failed(try decoder.decode(Failure.self, from: body))
            } catch {
                let problem = (error as? DecodingError).map(Wire.describe) ?? "\(error)"
                throw JSONReader.Failure(message: problem, offset: offset, path: ["failure"])
            }
        case let other:
            throw JSONReader.Failure(
                message: "status must be 'completed' or 'failed', not '\(other)'", offset: reader.offset, path: ["status"])
        }
        self.init(
            runId: try reader.required(members.runId, "runId"),
            activityId: try reader.required(members.activityId, "activityId"),
            attempt: try reader.required(members.attempt, "attempt"), worker: members.worker ?? "unknown", outcome: outcome,
            ranSeconds: ranSeconds)
    }
}

extension ReportBatch {
    func write(to json: inout JSONWriter) throws {
        try json.object { json in
            if let heartbeats {
                json.key("heartbeats")
                try json.array(heartbeats) { json, report in try report.write(to: &json) }
            }
            if let redelivered {
                json.key("redelivered")
                json.array(redelivered) { json, report in report.write(to: &json) }
            }
            if let results {
                json.key("results")
                try json.array(results) { json, report in try report.write(to: &json) }
            }
            if let started {
                json.key("started")
                try json.array(started) { json, report in try report.write(to: &json) }
            }
        }
    }

    init(reading reader: inout JSONReader) throws {
        var batch = ReportBatch()
        try reader.readObject { key, json in
            if try json.readNull() { return }
            switch key {
            case "started": batch.started = try json.readList(of: ActivityStarted.init(reading:))
            case "redelivered": batch.redelivered = try json.readList(of: ActivityRedelivered.init(reading:))
            case "heartbeats": batch.heartbeats = try json.readList(of: ActivityHeartbeat.init(reading:))
            case "results": batch.results = try json.readList(of: ActivityResult.init(reading:))
            default: try json.skipValue()
            }
        }
        self = batch
    }
}
