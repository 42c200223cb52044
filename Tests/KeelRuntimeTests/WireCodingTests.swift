import Foundation
import Keel
import KeelHarness
import Testing

@testable import KeelAMQP
@testable import KeelRuntime

/// The hand-written JSON of the messages every step sends (tasks, worker reports) against
/// Foundation's coders, which ``Wire`` uses for every other message: the same values both ways,
/// and hostile input refused with a reason, never a crash.
@Suite("Wire coding", .tags(.unit))
struct WireCodingTests {
    /// A task with every field set, strings that need escaping, and nested payloads.
    static let fullTask: ActivityTask = {
        var task = ActivityTask(
            workflowId: "doc \"7\"\\/é\u{1F600}\n\t\u{01}", runId: "run-1", workflowType: "document-processing",
            activityId: 9_007_199_254_740_993, activityType: "llm.complete", attempt: 3,
            input: Payload(data: Data(#"{"b":[1,2.5,-3e-7,true,null],"a":{"x":"y\u00e9\n"},"big":18446744073709551615}"#.utf8)),
            taskQueue: "llm", scheduledAt: Date(timeIntervalSince1970: 1_800_000_000.123456),
            attemptScheduledAt: Date(timeIntervalSince1970: 1_800_000_004.5), startToCloseTimeout: 60,
            scheduleToCloseTimeout: 3600.25, heartbeatTimeout: 0.001, heartbeatDetails: Payload(data: Data("[\"page\",4]".utf8)),
            scheduleToStartTimeout: 10, trace: ["traceparent": "00-abc-def-01", "tracestate": "k=v"],
            providers: ["openai", "anthropic"], claimBeforeRunning: true)
        task.republished = false
        task.coordinatorEpoch = 1_800_000_000_000
        return task
    }()

    static let minimalTask = ActivityTask(
        workflowId: "w", runId: "r", workflowType: "t", activityId: 1, activityType: "noop", attempt: 1, input: .null,
        taskQueue: "default", scheduledAt: Date(timeIntervalSince1970: 0), attemptScheduledAt: Date(timeIntervalSince1970: 0),
        startToCloseTimeout: nil, scheduleToCloseTimeout: nil, heartbeatTimeout: nil, heartbeatDetails: nil)

    /// Payload bytes as Foundation would write them, so that values compare whatever spelling
    /// each coder chose.
    static func normalized(_ task: ActivityTask) throws -> ActivityTask {
        func normal(_ payload: Payload) throws -> Payload {
            Payload(data: try Wire.encode(try JSONDecoder().decode(JSONValue.self, from: payload.data)))
        }
        var task = task
        task.input = try normal(task.input)
        task.heartbeatDetails = try task.heartbeatDetails.map(normal)
        return task
    }

    /// A task's envelope (version 2): its type in the `type` property, its attempt key as the
    /// message id, `keel-version: 2` and the trace context as headers, nothing else.
    @Test func aTaskCarriesItsTypeInThePropertyAndOnlyItsVersionAndTraceAsHeaders() throws {
        let topology = Topology(namespace: "keel")
        let traced = try Self.fullTask.message(topology: topology)
        #expect(traced.type == "task" && traced.messageId == Self.fullTask.attemptKey)
        #expect(traced.exchange == topology.tasksExchange && traced.routingKey == "llm")
        #expect(traced.headers == ["keel-version": "2", "traceparent": "00-abc-def-01", "tracestate": "k=v"])
        #expect(try Self.minimalTask.message(topology: topology).headers == ["keel-version": "2"])
        #expect(try Self.normalized(ActivityTask(wireBody: traced.body)) == Self.normalized(Self.fullTask))
    }

    @Test(arguments: [fullTask, minimalTask])
    func aTaskReadsBackTheSameThroughEitherCoder(task: ActivityTask) throws {
        let handWritten = try task.wireBody()
        #expect(try JSONSerialization.jsonObject(with: handWritten) is [String: Any])
        #expect(try Self.normalized(Wire.decode(ActivityTask.self, from: handWritten, what: "task")) == Self.normalized(task))
        #expect(try Self.normalized(ActivityTask(wireBody: handWritten)) == Self.normalized(task))
        let foundation = try Wire.encode(task)
        #expect(try Self.normalized(ActivityTask(wireBody: foundation)) == Self.normalized(task))
        // The same members in the same order as Foundation's (sorted keys), whatever their spelling.
        func keys(_ body: Data) throws -> [String] {
            try (JSONSerialization.jsonObject(with: body) as? [String: Any] ?? [:]).keys.sorted()
        }
        #expect(try keys(handWritten) == keys(foundation))
        let text = String(decoding: handWritten, as: UTF8.self)
        #expect(text.hasPrefix(#"{"activityId":"#) && text.hasSuffix(#""workflowType":"\#(task.workflowType)"}"#))
    }

    @Test func aTaskBodyFromAnotherLanguageIsRead() throws {
        // Whitespace, escapes a Python json.dumps writes, nulls for absent fields, unknown fields.
        let body = """
            { "workflowId" : "caf\\u00e9 \\ud83d\\ude00", "runId": "r-1", "workflowType": "t", "activityId": 4,
              "activityType": "noop", "attempt": 2, "input": {"k": [1, {"n": null}]}, "taskQueue": "default",
              "scheduledAt": 1800000000, "attemptScheduledAt": 1.8e9, "heartbeatTimeout": null,
              "heartbeatDetails": null, "trace": null, "somethingNew": {"x": [true]}, "republished": true }
            """
        let task = try ActivityTask(wireBody: Data(body.utf8))
        #expect(task.workflowId == "café 😀")
        #expect(task.attempt == 2 && task.activityId == 4 && task.republished == true)
        #expect(task.attemptScheduledAt == Date(timeIntervalSince1970: 1_800_000_000))
        #expect(task.heartbeatTimeout == nil && task.heartbeatDetails == nil && task.trace == nil)
        #expect(try task.input.decode(JSONValue.self) == .object(["k": .array([.integer(1), .object(["n": .null])])]))
        #expect(
            try Self.normalized(task) == Self.normalized(try Wire.decode(ActivityTask.self, from: Data(body.utf8), what: "task")))
    }

    @Test func aBadTaskBodySaysWhatIsWrongAndWhere() throws {
        func reason(_ body: String) -> String? {
            do {
                _ = try ActivityTask(wireBody: Data(body.utf8))
                return nil
            } catch let error as WireError {
                return error.message
            } catch {
                return "not a WireError: \(error)"
            }
        }
        let valid = String(decoding: try Self.minimalTask.wireBody(), as: UTF8.self)
        #expect(reason(valid) == nil)
        #expect(
            reason(valid.replacingOccurrences(of: #""runId":"r","#, with: ""))?.hasPrefix(
                "task body is not valid: missing field 'runId' (byte ") == true)
        #expect(
            reason(valid.replacingOccurrences(of: #""runId":"r""#, with: #""runId":3"#))?.contains("expected a string at 'runId'")
                == true)
        #expect(
            reason(valid.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":1.5"#))?.contains("expected an integer")
                == true)
        #expect(reason(#"{"trace":{"a":1}}"#)?.contains("expected a string at 'trace.a'") == true)
        #expect(reason("{not json")?.hasPrefix("task body is not valid: expected a member name") == true)
        #expect(reason(valid + "x")?.contains("unexpected text after the JSON value") == true)
        #expect(reason(#"{"workflowId":"a\#u{01}b"}"#)?.contains("control character") == true)
        #expect(reason(#"{"workflowId":"\ud800"}"#)?.contains("lone surrogate") == true)
        #expect(reason(#"{"activityId":01}"#)?.contains("expected") == true)
        #expect(reason(#"{"input":nul}"#)?.contains("expected null") == true)
        #expect(reason(String(repeating: #"{"input":"#, count: 600))?.contains("nested more than 512 deep") == true)
        #expect(reason(String(repeating: "[", count: 100_000)) != nil)
        // Text beyond ASCII is checked to be UTF-8, with or without an escape before it.
        let accented = valid.replacingOccurrences(of: #""runId":"r""#, with: #""runId":"ré🚀""#)
        #expect(try ActivityTask(wireBody: Data(accented.utf8)).runId == "ré🚀")
        for prefix in [#"{"workflowId":"a"#, #"{"workflowId":"\n"#] {
            let garbled = Data(prefix.utf8) + [0xC3, 0x28] + Data(#""}"#.utf8)
            #expect(throws: WireError.self) { try ActivityTask(wireBody: garbled) }
            do { _ = try ActivityTask(wireBody: garbled) } catch let error as WireError {
                #expect(error.message.contains("a string is not valid UTF-8"))
            }
        }
    }

    @Test func noCutOrGarbledTaskBodyCrashesTheReaderOrIsTakenWhenItIsNotJSON() throws {
        let body = Array(try Self.fullTask.wireBody())
        for length in 0..<body.count {
            #expect(throws: WireError.self) { try ActivityTask(wireBody: Data(body[..<length])) }
        }
        var fuzzer = MessageFuzzer(seed: 7, topology: Topology(namespace: "wire-coding"))
        var random = DeterministicRandom(seed: 11)
        var taken = 0
        for round in 0..<3000 {
            var bytes = round < 1500 ? Array(fuzzer.next(for: .tasks).body) : body
            // And single-byte changes of a valid body.
            if round >= 1500, !bytes.isEmpty {
                bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
            }
            let data = Data(bytes)
            guard let task = try? ActivityTask(wireBody: data) else { continue }
            taken += 1
            #expect(
                (try? JSONSerialization.jsonObject(with: data)) != nil,
                "taken but not JSON: \(String(decoding: data, as: UTF8.self))")
            if let foundation = try? Wire.decode(ActivityTask.self, from: data, what: "task") {
                #expect(try Self.normalized(task) == Self.normalized(foundation))
            }
        }
        #expect(taken > 100, "the fuzzer's valid tasks and harmless changes are read")
    }

    @Test func aPayloadThatIsNotJSONIsNotSent() throws {
        var task = Self.minimalTask
        task.input = Payload(data: Data("hello".utf8))
        #expect(throws: PayloadError.self) { try task.wireBody() }
        task.input = Payload(data: Data("{} {}".utf8))
        #expect(throws: PayloadError.self) { try task.wireBody() }
    }
}

/// Worker reports through the hand-written coder and through Foundation's.
@Suite("Wire coding of reports", .tags(.unit))
struct ReportWireCodingTests {
    static let time = Date(timeIntervalSince1970: 1_800_000_000.25)
    static let reports: [WorkerReport] = [
        .started(ActivityStarted(runId: "r-1", activityId: 2, attempt: 1, worker: "host:7", time: time)),
        .redelivered(ActivityRedelivered(runId: "r-1", activityId: 3, attempt: 2, worker: "w\"1")),
        .redelivered(ActivityRedelivered(runId: "r-1", activityId: 9, attempt: 1, worker: "w", handedBack: true)),
        .heartbeat(ActivityHeartbeat(runId: "r-2", activityId: 4, attempt: 1, details: Payload(data: Data(#"{"page":9}"#.utf8)))),
        .heartbeat(ActivityHeartbeat(runId: "r-2", activityId: 5, attempt: 1, details: nil)),
        .result(
            ActivityResult(runId: "r-3", activityId: 6, attempt: 1, worker: "w", outcome: .completed(.null), ranSeconds: 0.0125)),
        .result(
            ActivityResult(
                runId: "r-3", activityId: 7, attempt: 4, worker: "w",
                outcome: .completed(Payload(data: Data(#"{"text":"é\n","tokens":[12,3.5]}"#.utf8))))),
        .result(
            ActivityResult(
                runId: "r-4", activityId: 8, attempt: 2, worker: "w",
                outcome: .failed(
                    Failure(
                        type: "LLMRateLimited", message: "429", nonRetryable: false, nextRetryDelay: 1.5,
                        details: Payload(data: Data(#"{"tries":["openai"]}"#.utf8)), nextAttemptAt: time)), ranSeconds: 3))
    ]

    static func delivery(_ message: AMQPMessage) -> AMQPDelivery {
        AMQPDelivery(
            deliveryTag: 1, exchange: message.exchange, routingKey: message.routingKey, redelivered: false, body: message.body,
            type: message.type, messageId: nil, replyTo: nil, correlationId: nil, headers: message.headers, death: nil)
    }

    /// A report as Foundation's coder writes it, for comparing values whatever their spelling.
    static func normal(_ reports: [WorkerReport]) throws -> [Data] {
        try reports.map { report in
            switch report {
            case .started(let report): try Wire.encode(report)
            case .redelivered(let report): try Wire.encode(report)
            case .heartbeat(let report): try Wire.encode(report)
            case .result(let report): try Wire.encode(report)
            case .claim(let report): try Wire.encode(report)
            }
        }
    }

    static let route = Topology(namespace: "wire-coding").reportRoute(workflowId: "w")

    @Test func eachReportAloneAndAllInOneBatchReadBackTheSame() throws {
        for report in Self.reports {
            let message = try WorkerReport.message(for: [report], route: Self.route)
            let read = try WorkerReport.decode(Self.delivery(message))
            #expect(try Self.normal(read) == Self.normal([report]))
            #expect(try JSONSerialization.jsonObject(with: message.body) is [String: Any])
        }
        let batch = try WorkerReport.message(for: Self.reports, route: Self.route)
        #expect(batch.type == "reports")
        // Read back in the batch's order: starts, redeliveries, heartbeats, results.
        #expect(try Self.normal(WorkerReport.decode(Self.delivery(batch))) == Self.normal(Self.reports))
        // Foundation reads what the hand-written coder wrote, and the other way round.
        let foundation = try Wire.decode(ReportBatch.self, from: batch.body, what: "reports")
        #expect(try Self.normal((foundation.results ?? []).map { .result($0) }) == Self.normal(Array(Self.reports.suffix(3))))
        var foreign = Self.delivery(batch)
        foreign.body = try Wire.encode(foundation)
        #expect(try Self.normal(WorkerReport.decode(foreign)) == Self.normal(Self.reports))
    }

    @Test func aBadReportSaysWhatIsWrongAndWhere() throws {
        func reason(_ type: String, _ body: String) -> String? {
            var delivery = Self.delivery(AMQPMessage(exchange: "", routingKey: "", body: Data(body.utf8), type: type))
            delivery.headers = [:]
            do {
                _ = try WorkerReport.decode(delivery)
                return nil
            } catch let error as WireError {
                return error.message
            } catch {
                return "not a WireError: \(error)"
            }
        }
        #expect(reason("result", #"{"runId":"r","activityId":1,"attempt":1,"status":"completed"}"#) == nil)
        #expect(
            reason("result", #"{"runId":"r","activityId":1,"attempt":1,"status":"done"}"#)?
                .hasPrefix("result body is not valid: status must be 'completed' or 'failed', not 'done' at 'status'") == true)
        #expect(
            reason(
                "reports", #"{"results":[{"runId":"r","activityId":1,"attempt":1,"status":"failed","failure":{"message":"x"}}]}"#)?
                .hasPrefix("reports body is not valid: missing field 'type' at 'results.0.failure'") == true)
        #expect(
            reason("reports", #"{"started":[{"runId":"r","activityId":1,"attempt":1,"worker":"w"}]}"#)?
                .hasPrefix("reports body is not valid: missing field 'time' at 'started.0'") == true)
        #expect(
            reason("heartbeat", #"{"runId":"r","activityId":"1","attempt":1}"#)?.contains("expected an integer at 'activityId'")
                == true)
    }

    @Test func noGarbledReportCrashesTheReaderOrIsTakenWhenItIsNotJSON() throws {
        var fuzzer = MessageFuzzer(seed: 5, topology: Topology(namespace: "wire-coding"), knownRunIds: ["r-1"])
        var taken = 0
        for _ in 0..<3000 {
            let message = fuzzer.next(for: .results)
            guard let reports = try? WorkerReport.decode(Self.delivery(message)) else { continue }
            taken += 1
            #expect((try? JSONSerialization.jsonObject(with: message.body)) != nil)
            if message.type == "reports", let foundation = try? Wire.decode(ReportBatch.self, from: message.body, what: "reports")
            {
                let all: [WorkerReport] =
                    (foundation.started ?? []).map { .started($0) } + (foundation.redelivered ?? []).map { .redelivered($0) }
                    + (foundation.heartbeats ?? []).map { .heartbeat($0) } + (foundation.results ?? []).map { .result($0) }
                #expect(try Self.normal(reports) == Self.normal(all))
            }
        }
        #expect(taken > 100)
    }
}
