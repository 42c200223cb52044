import Foundation
import KeelCore

// A task's body on the wire (docs/protocol.md, "Serving a task queue"), written and read by
// hand: the same JSON as `Wire.encode` and `Wire.decode` of `ActivityTask`, at a fraction of
// their cost, for the message every step sends.
extension ActivityTask {
    /// The task's wire body.
    func wireBody() throws -> Data {
        var json = JSONWriter()
        try write(to: &json)
        return json.data
    }

    /// Reads a task's wire body; unknown members are ignored, a `null` is an absent optional.
    init(wireBody body: Data) throws {
        self = try Wire.read(body, what: "task") { reader in try ActivityTask(reading: &reader) }
    }

    private init(reading reader: inout JSONReader) throws {
        var workflowId: String?
        var runId: String?
        var workflowType: String?
        var activityId: Int64?
        var activityType: String?
        var attempt: Int?
        var input: Payload?
        var taskQueue: String?
        var scheduledAt: Date?
        var attemptScheduledAt: Date?
        var startToCloseTimeout: Double?
        var scheduleToCloseTimeout: Double?
        var heartbeatTimeout: Double?
        var scheduleToStartTimeout: Double?
        var heartbeatDetails: Payload?
        var trace: [String: String]?
        var republished: Bool?
        var providers: [String]?
        var claimBeforeRunning: Bool?
        var coordinatorEpoch: Int64?
        try reader.readObject { key, json in
            switch key {
            // A payload may be null itself (`input`); a null `heartbeatDetails` is an absent one.
            case "input": input = Payload(data: try json.readRaw())
            case "heartbeatDetails": heartbeatDetails = try json.readNull() ? nil : Payload(data: try json.readRaw())
            default:
                if try json.readNull() { return }
                switch key {
                case "workflowId": workflowId = try json.readString()
                case "runId": runId = try json.readString()
                case "workflowType": workflowType = try json.readString()
                case "activityId": activityId = try json.readInteger()
                case "activityType": activityType = try json.readString()
                case "attempt": attempt = try json.readInt()
                case "taskQueue": taskQueue = try json.readString()
                case "scheduledAt": scheduledAt = try json.readDate()
                case "attemptScheduledAt": attemptScheduledAt = try json.readDate()
                case "startToCloseTimeout": startToCloseTimeout = try json.readNumber()
                case "scheduleToCloseTimeout": scheduleToCloseTimeout = try json.readNumber()
                case "heartbeatTimeout": heartbeatTimeout = try json.readNumber()
                case "scheduleToStartTimeout": scheduleToStartTimeout = try json.readNumber()
                case "trace": trace = try json.readStringObject()
                case "republished": republished = try json.readBool()
                case "providers": providers = try json.readStringArray()
                case "claimBeforeRunning": claimBeforeRunning = try json.readBool()
                case "coordinatorEpoch": coordinatorEpoch = try json.readInteger()
                default: try json.skipValue()
                }
            }
        }
        self.init(
            workflowId: try reader.required(workflowId, "workflowId"), runId: try reader.required(runId, "runId"),
            workflowType: try reader.required(workflowType, "workflowType"),
            activityId: try reader.required(activityId, "activityId"),
            activityType: try reader.required(activityType, "activityType"), attempt: try reader.required(attempt, "attempt"),
            input: try reader.required(input, "input"), taskQueue: try reader.required(taskQueue, "taskQueue"),
            scheduledAt: try reader.required(scheduledAt, "scheduledAt"),
            attemptScheduledAt: try reader.required(attemptScheduledAt, "attemptScheduledAt"),
            startToCloseTimeout: startToCloseTimeout, scheduleToCloseTimeout: scheduleToCloseTimeout,
            heartbeatTimeout: heartbeatTimeout, heartbeatDetails: heartbeatDetails,
            scheduleToStartTimeout: scheduleToStartTimeout, trace: trace, providers: providers)
        self.republished = republished
        self.claimBeforeRunning = claimBeforeRunning
        self.coordinatorEpoch = coordinatorEpoch
    }
}
