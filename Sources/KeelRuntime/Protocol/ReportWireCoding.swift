import Foundation
import KeelCore

// Worker reports on the wire (docs/protocol.md, "Serving a task queue"), written and read by
// hand: the same JSON as `Wire.encode` and `Wire.decode` of these types, for the messages every
// step sends back. A failure, rare on this path, goes through Foundation's coder as before.
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
        var (runId, activityId, attempt, worker, time): (String?, Int64?, Int?, String?, Date?)
        try reader.readObject { key, json in
            if try json.readNull() { return }
            switch key {
            case "runId": runId = try json.readString()
            case "activityId": activityId = try json.readInteger()
            case "attempt": attempt = try json.readInt()
            case "worker": worker = try json.readString()
            case "time": time = try json.readDate()
            default: try json.skipValue()
            }
        }
        self.init(
            runId: try reader.required(runId, "runId"), activityId: try reader.required(activityId, "activityId"),
            attempt: try reader.required(attempt, "attempt"), worker: try reader.required(worker, "worker"),
            time: try reader.required(time, "time"))
    }
}

extension ActivityRedelivered {
    func write(to json: inout JSONWriter) {
        json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            json.member("runId", runId)
            json.member("worker", worker)
        }
    }

    init(reading reader: inout JSONReader) throws {
        var (runId, activityId, attempt, worker): (String?, Int64?, Int?, String?)
        try reader.readObject { key, json in
            if try json.readNull() { return }
            switch key {
            case "runId": runId = try json.readString()
            case "activityId": activityId = try json.readInteger()
            case "attempt": attempt = try json.readInt()
            case "worker": worker = try json.readString()
            default: try json.skipValue()
            }
        }
        self.init(
            runId: try reader.required(runId, "runId"), activityId: try reader.required(activityId, "activityId"),
            attempt: try reader.required(attempt, "attempt"), worker: try reader.required(worker, "worker"))
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
        var (runId, activityId, attempt, details): (String?, Int64?, Int?, Payload?)
        try reader.readObject { key, json in
            if try json.readNull() { return }
            switch key {
            case "runId": runId = try json.readString()
            case "activityId": activityId = try json.readInteger()
            case "attempt": attempt = try json.readInt()
            case "details": details = Payload(data: try json.readRaw())
            default: try json.skipValue()
            }
        }
        self.init(
            runId: try reader.required(runId, "runId"), activityId: try reader.required(activityId, "activityId"),
            attempt: try reader.required(attempt, "attempt"), details: details)
    }
}

extension ActivityResult {
    func write(to json: inout JSONWriter) throws {
        try json.object { json in
            json.member("activityId", activityId)
            json.member("attempt", attempt)
            switch outcome {
            case .completed(let payload):
                try json.member("result", payload)
                json.member("runId", runId)
                json.member("status", "completed")
            case .failed(let failure):
                try json.member("failure", Payload(data: try Wire.encode(failure)))
                json.member("runId", runId)
                json.member("status", "failed")
            }
            json.member("worker", worker)
        }
    }

    /// `worker` may be absent (`unknown`), and `result` too (`null`), as in `init(from:)`.
    init(reading reader: inout JSONReader) throws {
        var (runId, activityId, attempt, worker, status): (String?, Int64?, Int?, String?, String?)
        var result: Payload?
        var failure: (body: Data, offset: Int)?
        try reader.readObject { key, json in
            if key == "result" {
                result = Payload(data: try json.readRaw())
                return
            }
            if try json.readNull() { return }
            switch key {
            case "runId": runId = try json.readString()
            case "activityId": activityId = try json.readInteger()
            case "attempt": attempt = try json.readInt()
            case "worker": worker = try json.readString()
            case "status": status = try json.readString()
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
            runId: try reader.required(runId, "runId"), activityId: try reader.required(activityId, "activityId"),
            attempt: try reader.required(attempt, "attempt"), worker: worker ?? "unknown", outcome: outcome)
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
                try json.array(redelivered) { json, report in report.write(to: &json) }
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
        self.init()
        var batch = self
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
