import Foundation
import Testing

@testable import KeelCore

/// Activity records and outbox rows, written by hand into the history file, read back by
/// Foundation's `JSONDecoder` as the rows written by `JSONEncoder` were: nothing in the file
/// changes meaning.
@Suite("Stored JSON", .tags(.unit))
struct StoredJSONTests {
    static let time = Date(timeIntervalSinceReferenceDate: 786_000_000.123456)

    static let fullRecord: ActivityRecord = {
        var record = ActivityRecord(
            runId: "run-\"1\"", activityId: 42, activityType: "llm.complete",
            input: Payload(data: Data(#"{"prompt":"é\n","n":[1,2.5]}"#.utf8)),
            options: ActivityOptions(
                taskQueue: "llm", scheduleToStartTimeout: .seconds(5), startToCloseTimeout: .seconds(60),
                scheduleToCloseTimeout: .milliseconds(90_500), heartbeatTimeout: .seconds(10),
                retryPolicy: RetryPolicy(maximumAttempts: 7, nonRetryableErrorTypes: ["Invalid"]), parkOnExhaustion: true,
                countsAgainstBudget: true),
            scheduledAt: time)
        record.attempt = 3
        record.state = .parked
        record.attemptScheduledAt = time.addingTimeInterval(1.5)
        record.startedAt = time.addingTimeInterval(2)
        record.startedByClaim = "claim-1"
        record.startedBy = "host:12"
        record.heartbeatDetails = Payload(data: Data("[\"page\",3]".utf8))
        record.attemptsBeforeRedrive = 2
        record.parkedFailure = Failure(
            type: "LLMRateLimited", message: "429", nextRetryDelay: 2.5, details: Payload(data: Data("{}".utf8)),
            retryState: .maximumAttemptsReached, nextAttemptAt: time)
        record.lastHeartbeatAt = time.addingTimeInterval(3)
        record.lastProviders = ["openai"]
        record.waitingSince = time.addingTimeInterval(-1)
        record.route = ["openai", "anthropic"]
        record.rateLimitedAttempts = 1
        record.capacityWait = 0.25
        record.unstartedRedeliveries = 1
        record.claimFirst = true
        return record
    }()

    static let plainRecord = ActivityRecord(
        runId: "r", activityId: 1, activityType: "noop", input: .null, options: ActivityOptions(), scheduledAt: time)

    /// Payload bytes as `JSONEncoder` would write them with sorted keys (without, two equal
    /// objects may come out in different orders), so that records compare whatever spelling.
    static func normalized(_ payload: Payload?) throws -> Payload? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try payload.map { Payload(data: try encoder.encode(try JSONDecoder().decode(JSONValue.self, from: $0.data))) }
    }

    static func normalized(_ record: ActivityRecord) throws -> ActivityRecord {
        var record = record
        record.input = try normalized(record.input)!
        record.heartbeatDetails = try normalized(record.heartbeatDetails)
        let details = try normalized(record.parkedFailure?.details)
        record.parkedFailure?.details = details
        return record
    }

    @Test(arguments: [fullRecord, plainRecord])
    func anActivityRecordReadsBackAsJSONEncoderWroteIt(record: ActivityRecord) throws {
        var json = JSONWriter(dates: .sinceReferenceDate)
        try record.write(to: &json, encodedOptions: try JSONEncoder().encode(record.options))
        let read = try JSONDecoder().decode(ActivityRecord.self, from: json.data)
        #expect(try Self.normalized(read) == Self.normalized(record))
        // The same members as JSONEncoder writes.
        func keys(_ data: Data) throws -> Set<String> {
            Set(try (JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]).keys)
        }
        #expect(try keys(json.data) == keys(try JSONEncoder().encode(record)))
    }

    @Test func anOutboxTaskReadsBackAsJSONEncoderWroteIt() throws {
        var task = ActivityTask(
            workflowId: "w\u{01}", runId: "r", workflowType: "t", activityId: 3, activityType: "noop", attempt: 2,
            input: Payload(data: Data(#"{"a":null}"#.utf8)), taskQueue: "gpu", scheduledAt: Self.time,
            attemptScheduledAt: Self.time.addingTimeInterval(0.5), startToCloseTimeout: 30, scheduleToCloseTimeout: nil,
            heartbeatTimeout: 5, heartbeatDetails: nil, scheduleToStartTimeout: 1, trace: ["traceparent": "00-1-2-01"],
            providers: ["a"], claimBeforeRunning: true)
        task.republished = true
        task.coordinatorEpoch = 9
        var json = JSONWriter(dates: .sinceReferenceDate)
        try task.write(to: &json)
        #expect(try JSONDecoder().decode(ActivityTask.self, from: json.data) == task)
        // And with times since 1970, as the wire has them.
        var wire = JSONWriter(dates: .since1970)
        try task.write(to: &wire)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        #expect(try decoder.decode(ActivityTask.self, from: wire.data) == task)
    }

    @Test func aNumberJSONCannotHoldIsRefused() throws {
        var json = JSONWriter()
        #expect(throws: EncodingError.self) { try json.number(.infinity) }
        #expect(throws: EncodingError.self) { try json.number(.nan) }
        try json.number(-0.0)
        try json.number(1e300)
        try json.number(.leastNonzeroMagnitude)  // 5e-324
        try json.number(123_456_789_012.5)
        let text = String(decoding: json.data, as: UTF8.self)
        #expect(text == "01e+3005e-324123456789012.5")
    }
}
