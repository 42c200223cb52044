import Foundation
import Keel
import Testing

@testable import KeelAMQP
@testable import KeelConsole
@testable import KeelRuntime

/// What a message may carry, and the checks that keep a bad one from stopping a process:
/// pure logic, no broker.
@Suite("Message limits and crash marker", .tags(.unit))
struct MessageLimitsTests {
    let limits = MessageLimits()

    @Test func startsOverALimitAreRefusedWithTheFieldAndTheLimit() throws {
        let long = StartJob(StartRequest(workflowType: "t", workflowId: String(repeating: "w", count: 1001), input: .null))
        let error = #expect(throws: LimitError.self) { try limits.check(long) }
        #expect(error?.message == "workflowId is 1001 bytes, over the 1000-byte limit")
        let empty = StartJob(StartRequest(workflowType: "t", workflowId: "", input: .null))
        #expect(throws: LimitError.self) { try limits.check(empty) }
        let big = StartJob(
            StartRequest(
                workflowType: "summarize", workflowId: "w",
                input: Payload(data: Data(repeating: 0x20, count: Payload.defaultSizeLimit + 1))))
        let payload = #expect(throws: PayloadError.self) { try limits.check(big) }
        #expect(
            payload?.message.hasPrefix("input of workflow summarize is 2097153 bytes, over the 2097152-byte payload limit")
                == true)
        #expect(payload?.errorType == "PayloadTooLarge")
        let budget = StartJob(
            StartRequest(
                workflowType: "t", workflowId: "w", input: .null, options: WorkflowOptions(budget: SpendLimit(maxTokens: -5))))
        #expect(throws: InvalidOptionsError.self) { try limits.check(budget) }
        try limits.check(StartJob(StartRequest(workflowType: "t", workflowId: String(repeating: "w", count: 1000), input: .null)))
    }

    @Test func envelopesOverTheBodyOrHeaderLimitAreRefusedBeforeParsing() throws {
        var message = AMQPDelivery(
            deliveryTag: 1, exchange: "", routingKey: "", redelivered: false, body: Data(count: limits.jobBody + 1),
            type: "start",
            messageId: nil, replyTo: nil, correlationId: nil, headers: [:], death: nil)
        let body = #expect(throws: LimitError.self) {
            try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "start job")
        }
        #expect(body?.message == "start job body is \(limits.jobBody + 1) bytes, over the \(limits.jobBody)-byte limit")
        message.body = Data("{}".utf8)
        message.headers = ["x-padding": String(repeating: "h", count: 16_384)]
        #expect(throws: LimitError.self) { try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "start job") }
        message.headers = ["keel-type": "start"]
        try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "start job")
    }

    @Test func tasksWithTimeoutsNoDurationCanHoldAreRefused() throws {
        var task = ActivityTask(
            workflowId: "w", runId: "r", workflowType: "t", activityId: 1, activityType: "noop", attempt: 1, input: .null,
            taskQueue: "default", scheduledAt: Date(), attemptScheduledAt: Date(), startToCloseTimeout: 1e308,
            scheduleToCloseTimeout: nil, heartbeatTimeout: nil, heartbeatDetails: nil)
        let error = #expect(throws: LimitError.self) { try limits.check(task) }
        #expect(error?.message.hasPrefix("startToCloseTimeout is 1e+308; it must be") == true, "\(error?.message ?? "")")
        task.startToCloseTimeout = 60
        try limits.check(task)
        // And a duration made from such a value saturates instead of trapping.
        #expect(Duration.seconds(double: 1e308) == .nanoseconds(Int64.max))
        #expect(Duration.seconds(double: -.infinity) == .nanoseconds(Int64.min))
        #expect(Duration.seconds(double: .nan) == .zero)
        #expect(Duration.seconds(double: 1.5) == .milliseconds(1500))
    }

    @Test func anOversizedResultBecomesANonRetryableFailure() throws {
        let result = ActivityResult(
            runId: "r", activityId: 1, attempt: 1, worker: "w",
            outcome: .completed(Payload(data: Data(repeating: 0x20, count: Payload.defaultSizeLimit + 1))))
        let failure = try #require(limits.oversizedResult(result))
        #expect(failure.type == "PayloadTooLarge")
        #expect(failure.nonRetryable)
        #expect(
            limits.oversizedResult(ActivityResult(runId: "r", activityId: 1, attempt: 1, worker: "w", outcome: .completed(.null)))
                == nil)
    }

    @Test func workflowOptionsTakeTheDefaultsForFieldsTheyDoNotName() throws {
        let options = try JSONDecoder().decode(WorkflowOptions.self, from: Data(#"{"budget":{"maxTokens":5500}}"#.utf8))
        #expect(options.idConflictPolicy == .useExisting)
        #expect(options.idReusePolicy == .allowDuplicate)
        #expect(options.executionTimeout == nil)
        #expect(options.budget?.maxTokens == 5500)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(WorkflowOptions.self, from: Data(#"{"idConflictPolicy":"bogus"}"#.utf8))
        }
    }

    @Test func aRunRecordWritesResultAndFailureAsNullWhenAbsent() throws {
        let record = RunRecord(
            workflowId: "w", runId: "r", workflowType: "t", status: .running, input: .null, requestId: nil, parentRunId: nil,
            parentSeq: nil, continuedFromRunId: nil, createdAt: Date(), randomSeed: 1, options: WorkflowOptions(),
            executionDeadline: nil)
        let json = String(decoding: try Wire.encode(record), as: UTF8.self)
        #expect(json.contains(#""failure":null"#))
        #expect(json.contains(#""result":null"#))
        let decoded = try Wire.decode(RunRecord.self, from: Data(json.utf8), what: "run")
        #expect(decoded.failure == nil && decoded.result == nil)
    }

    @Test func onlyAddressLiteralsInTheLoopbackRangesCountAsLoopback() {
        for host in ["127.0.0.1", "127.1.2.3", "::1"] { #expect(AccessPolicy.isLoopback(host), "\(host)") }
        for host in ["localhost", "127.example.com", "0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "::2"] {
            #expect(!AccessPolicy.isLoopback(host), "\(host)")
        }
    }

    @Test func theCrashMarkerCountsConsecutiveCrashesInTheSameWorkflow() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("crash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // A marker opened while another names a run stands for the next process after a crash.
        let first = try CrashMarker(path: path)
        #expect(first.lastCrash == nil)
        let second = try first.around(workflowId: "order-42", runId: "run-1", lastEventId: 7) { try CrashMarker(path: path) }
        #expect(
            second.lastCrash == CrashMarker.Crash(workflowId: "order-42", runId: "run-1", lastEventId: 7, signal: 0, count: 1))
        let third = try second.around(workflowId: "order-42", runId: "run-1", lastEventId: 7) { try CrashMarker(path: path) }
        #expect(third.lastCrash?.count == 2)
        // Another workflow's crash starts the count again; a clean stop clears it.
        let fourth = try third.around(workflowId: "other", runId: "run-2", lastEventId: 1) { try CrashMarker(path: path) }
        #expect(fourth.lastCrash?.workflowId == "other")
        #expect(fourth.lastCrash?.count == 1)
        #expect(try CrashMarker(path: path).lastCrash == nil)
        // After an unblock, one more crash counts as the second.
        let fifth = try CrashMarker(path: path)
        fifth.expectCrash(workflowId: "order-42", runId: "run-1")
        let sixth = try fifth.around(workflowId: "order-42", runId: "run-1", lastEventId: 9) { try CrashMarker(path: path) }
        #expect(sixth.lastCrash?.count == 2)
    }
}
