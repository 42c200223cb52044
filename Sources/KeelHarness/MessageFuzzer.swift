import Foundation
import Keel

/// Generates hostile messages for every queue a Keel process consumes (jobs, worker reports,
/// tasks): valid messages and mutations of them (random bytes, truncated and deeply nested JSON,
/// wrong types, huge and empty fields, unknown types, stale attempts, oversized headers). The
/// same seed gives the same messages, so a failure is reproduced from the seed it prints.
public struct MessageFuzzer: Sendable {
    /// The queue a message is meant for.
    public enum Target: String, Sendable, CaseIterable { case jobs, results, tasks }

    public let seed: UInt64
    let topology: Topology
    let taskQueue: String
    /// Run ids of real runs, for reports about stale (or current) attempts.
    public var knownRunIds: [String]
    /// Workflow ids the fuzzer's own starts use, for signals and cancels that reach a run.
    private var workflowIds: [String] = []
    private var random: DeterministicRandom
    private var counter = 0

    public init(seed: UInt64, topology: Topology, taskQueue: String = "default", knownRunIds: [String] = []) {
        self.seed = seed
        self.topology = topology
        self.taskQueue = taskQueue
        self.knownRunIds = knownRunIds
        random = DeterministicRandom(seed: seed)
    }

    /// The next message, for `target`.
    public mutating func next(for target: Target) -> AMQPMessage {
        counter += 1
        var (type, body) = template(for: target)
        var message = AMQPMessage(
            exchange: "", routingKey: "", body: Data(), type: type, headers: ["keel-type": type, "keel-version": "1"])
        switch target {
        case .jobs: (message.exchange, message.routingKey) = (topology.jobsExchange, Topology.jobsRoutingKey)
        case .results: (message.exchange, message.routingKey) = (topology.resultsExchange, Topology.resultsRoutingKey)
        case .tasks: (message.exchange, message.routingKey) = (topology.tasksExchange, taskQueue)
        }
        if chance(0.3) { message.messageId = chance(0.5) ? "fuzz-\(seed)-\(counter)" : string(maxLength: 255) }
        if chance(0.2) { message.replyTo = pick(["amq.rabbitmq.reply-to.bogus", "nobody-listens-\(counter)", ""]) }
        if chance(0.2) { message.correlationId = string(maxLength: 60) }
        var bytes: Data
        switch random.next() % 100 {
        case 0..<30:
            bytes = encode(body)
        case 30..<40:
            bytes = Data((0..<Int(random.next() % 2000)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        case 40..<50:
            let whole = encode(body)
            bytes = whole.prefix(Int(random.next() % UInt64(max(whole.count, 1))))
        case 50..<58:
            let depth = pick([10, 100, 600, 3000])
            let open = chance(0.5) ? "[" : "{\"a\":"
            let close = open == "[" ? "]" : "}"
            bytes = Data((String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)).utf8)
            if chance(0.5), let key = body.keys.randomElement(using: &random) {
                body[key] = try? JSONDecoder().decode(JSONValue.self, from: bytes)
                bytes = encode(body)
            }
        case 58..<70:
            if let key = body.keys.randomElement(using: &random) { body[key] = wrongValue() }
            bytes = encode(body)
        case 70..<80:
            if let key = body.keys.randomElement(using: &random) {
                // Megabytes only now and then (one message in a thousand): more would measure the
                // broker's disk, and slow every other test sharing it.
                let size = chance(0.01) ? pick([2_200_000, 3_300_000]) : pick([256, 1_100, 70_000])
                body[key] = .string(String(repeating: "x", count: size))
            }
            bytes = encode(body)
        case 80..<88:
            if let key = body.keys.randomElement(using: &random) {
                body[key] = pick([.string(""), .object([:]), .array([]), .null])
            }
            if chance(0.3), let key = body.keys.randomElement(using: &random) { body.removeValue(forKey: key) }
            bytes = encode(body)
        case 88..<95:
            let wrong = pick(["", "bogus", "task", "start", "result", "reports", "dead-letter", "claim", string(maxLength: 40)])
            if chance(0.5) { message.type = wrong } else { message.type = nil }
            if chance(0.5) { message.headers["keel-type"] = wrong } else { message.headers.removeValue(forKey: "keel-type") }
            bytes = encode(body)
        default:
            message.headers["x-fuzz"] = String(repeating: "h", count: pick([17_000, 40_000, 90_000]))
            bytes = encode(body)
        }
        message.body = bytes
        return message
    }

    private mutating func template(for target: Target) -> (String, [String: JSONValue]) {
        switch target {
        case .jobs:
            let type = pick([
                "start", "start", "signal", "cancel", "terminate", "query", "describe", "redrive", "discard", "unblock"
            ])
            if type == "start" {
                let id = "fuzz-\(seed)-\(counter)"
                workflowIds.append(id)
                var body: [String: JSONValue] = [
                    "workflowType": .string(pick(["bench-sequential", "bench-sequential", "fault-unknown", "", "noop"])),
                    "workflowId": .string(id),
                    "input": pick([.integer(0), .integer(1), .integer(2), .integer(-1), .string("x"), .null])
                ]
                if chance(0.3) { body["requestId"] = .string(string(maxLength: 40)) }
                if chance(0.4) {
                    body["options"] = pick([
                        .object([:]), .object(["budget": .object(["maxTokens": .integer(100)])]),
                        .object(["budget": .object(["maxTokens": .integer(-5)])]),
                        .object(["idConflictPolicy": .string("bogus")]),
                        .object(["executionTimeout": .number(-1)]), .object(["idReusePolicy": .string("rejectDuplicate")])
                    ])
                }
                return (type, body)
            }
            var body: [String: JSONValue] = [
                "workflowId": .string(workflowIds.randomElement(using: &random) ?? string(maxLength: 30))
            ]
            if chance(0.6) { body["name"] = .string(pick(["approve", "status", string(maxLength: 20)])) }
            if chance(0.5) { body["input"] = pick([.null, .integer(1), .object(["by": .string("fuzz")])]) }
            if chance(0.3) { body["reason"] = .string(string(maxLength: 50)) }
            if chance(0.3) { body["runId"] = .string(runId()) }
            if chance(0.3) { body["activityId"] = .integer(Int64(random.next() % 5)) }
            return (type, body)
        case .results:
            let type = pick(["started", "redelivered", "claim", "heartbeat", "result", "reports"])
            let report = reportBody()
            if type == "reports" {
                return (
                    type,
                    [
                        "started": .array([.object(reportBody())]), "heartbeats": .array([.object(reportBody())]),
                        "results": .array([
                            .object(reportBody().merging(["status": .string("completed"), "result": .integer(1)]) { $1 })
                        ])
                    ]
                )
            }
            var body = report
            if type == "claim" { body["claimId"] = .string(string(maxLength: 36)) }
            if type == "heartbeat" { body["details"] = pick([.null, .integer(3)]) }
            if type == "result" {
                if chance(0.5) {
                    body["status"] = .string("completed")
                    body["result"] = pick([.integer(42), .string("forged"), .null])
                } else {
                    body["status"] = .string("failed")
                    body["failure"] = .object([
                        "type": .string(pick(["LLMRateLimited", "Boom", ""])), "message": .string("fuzz"),
                        "nonRetryable": .bool(chance(0.5)), "nextRetryDelay": .number(0.1)
                    ])
                }
            }
            return (type, body)
        case .tasks:
            let now = Date().timeIntervalSince1970
            var body: [String: JSONValue] = [
                "workflowId": .string("fuzz-task-\(counter)"), "runId": .string(runId()),
                "workflowType": .string("bench-sequential"),
                "activityId": .integer(Int64(random.next() % 4)),
                "activityType": .string(pick(["noop", "noop", "unknown-activity", ""])),
                "attempt": .integer(Int64(random.next() % 3)), "input": pick([.integer(1), .string("x"), .null]),
                "taskQueue": .string(taskQueue), "scheduledAt": .number(now), "attemptScheduledAt": .number(now),
                "startToCloseTimeout": .number(10)
            ]
            if chance(0.3) { body["republished"] = .bool(true) }
            return ("task", body)
        }
    }

    private mutating func reportBody() -> [String: JSONValue] {
        [
            "runId": .string(runId()), "activityId": .integer(Int64(random.next() % 4)),
            "attempt": .integer(Int64(random.next() % 3)),
            "worker": .string(pick(["fuzz-worker", string(maxLength: 30)])), "time": .number(Date().timeIntervalSince1970)
        ]
    }

    private mutating func runId() -> String {
        if !knownRunIds.isEmpty, chance(0.5) { return knownRunIds.randomElement(using: &random)! }
        return UUID().uuidString.lowercased()
    }

    private mutating func wrongValue() -> JSONValue {
        pick([
            .string("not a number"), .integer(Int64.max), .integer(-Int64.max), .number(1e308), .number(0.5), .bool(true),
            .array([.integer(1), .string("x")]), .object(["nested": .object(["deeper": .null])]), .null
        ])
    }

    private mutating func string(maxLength: Int) -> String {
        let alphabet = Array("abcXYZ019-_/. é✓\u{0}\"\\")
        return String((0..<Int(random.next() % UInt64(maxLength + 1))).map { _ in alphabet.randomElement(using: &random)! })
    }

    private mutating func chance(_ probability: Double) -> Bool { Double(random.next() % 10_000) < probability * 10_000 }
    private mutating func pick<T>(_ values: [T]) -> T { values[Int(random.next() % UInt64(values.count))] }

    private func encode(_ body: [String: JSONValue]) -> Data {
        (try? JSONEncoder().encode(JSONValue.object(body))) ?? Data("{}".utf8)
    }
}

extension MessageFuzzer {
    /// Publishes `count` messages, spread over the three targets, in confirmed batches. Returns
    /// how many went to each. A message the broker itself refuses (its headers do not fit a
    /// frame) is counted under `refusedByBroker` and skipped.
    public mutating func publish(_ count: Int, url: AMQPURL) async throws -> [String: Int] {
        let publisher = AMQPPublisher(url: url, topology: topology)
        defer { publisher.close() }
        var counts: [String: Int] = [:]
        var sent = 0
        while sent < count {
            // Made on a thread of its own: generating (megabyte strings, deep JSON) would hold a
            // thread of the small cooperative pool that other tests beside this one need.
            let (fuzzer, batch) = try await offPool { [self, sent] in
                var fuzzer = self
                let batch = (0..<min(100, count - sent)).map { index -> (Target, AMQPMessage) in
                    let target = Target.allCases[(sent + index) % Target.allCases.count]
                    return (target, fuzzer.next(for: target))
                }
                return (fuzzer, batch)
            }
            self = fuzzer
            do {
                try await publisher.publish(batch.map(\.1))
                for (target, _) in batch { counts[target.rawValue, default: 0] += 1 }
            } catch {
                // One at a time, to find the one the broker will not take.
                for (target, message) in batch {
                    do {
                        try await publisher.publish([message])
                        counts[target.rawValue, default: 0] += 1
                    } catch {
                        counts["refusedByBroker", default: 0] += 1
                    }
                }
            }
            sent += batch.count
        }
        return counts
    }

    /// The seed from `KEEL_FUZZ_SEED`, or a new one.
    public static func seedFromEnvironment() -> UInt64 {
        ProcessInfo.processInfo.environment["KEEL_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
    }
}

/// One fuzzing round against a running coordinator and worker: real runs first (their attempts
/// become the stale ones the fuzzer reports on), then the messages, then a normal run that must
/// complete; then the processes stop, and whatever they held unacknowledged would be back in
/// its queue. `keel bench fuzz` and the suite's fuzz test both run it.
public struct FuzzCampaign: Sendable {
    public struct Report: Sendable {
        public var seed: UInt64
        public var published: [String: Int]
        /// Status of the run started after the messages (nil: it did not finish in time).
        public var finalRun: RunStatus?
        public var failure: String?
        public var survived: Bool
        /// Messages back in the jobs, results and task queues once the processes stopped.
        public var stuck: [String: Int]
        public var deadLettered: Int
        public var seconds: Double

        public var passed: Bool { finalRun == .completed && survived && stuck.values.allSatisfy { $0 == 0 } }
    }

    public let url: AMQPURL
    public let topology: Topology
    public let seed: UInt64
    public let messages: Int

    public init(url: AMQPURL, topology: Topology, seed: UInt64, messages: Int) {
        self.url = url
        self.topology = topology
        self.seed = seed
        self.messages = messages
    }

    /// `alive` tells whether the coordinator and workers still run; `stop` stops them (SIGTERM).
    public func run(alive: @Sendable () -> Bool, stop: @Sendable () async -> Void) async throws -> Report {
        let started = ContinuousClock.now
        let client = KeelClient(url: url, topology: topology)
        defer { client.close() }
        var known: [String] = []
        for index in 0..<3 {
            let run = try await client.startAndConfirm(
                StartRequest(
                    workflowType: "bench-sequential", workflowId: "known-\(index)", input: Payload(encoding: 2, field: "input")),
                timeout: 60)
            known.append(run.runId)
        }
        var fuzzer = MessageFuzzer(seed: seed, topology: topology, knownRunIds: known)
        let published = try await fuzzer.publish(messages, url: url)
        var report = Report(
            seed: seed, published: published, finalRun: nil, failure: nil, survived: false, stuck: [:], deadLettered: 0,
            seconds: 0)
        do {
            _ = try await client.startAndConfirm(
                StartRequest(
                    workflowType: "bench-sequential", workflowId: "after-fuzz", input: Payload(encoding: 3, field: "input")),
                timeout: 120)
            report.finalRun = try await client.waitForResult(workflowId: "after-fuzz", timeout: 120).status
        } catch {
            report.failure = "\(error)"
        }
        report.survived = alive()
        let inspector = try AMQPConnection(url: url)
        defer { inspector.close() }
        let queues = [topology.jobsQueue, topology.resultsQueue, topology.queue(forTaskQueue: "default")]
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, try !queues.allSatisfy({ try inspector.inspect(queue: $0).messages == 0 }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        await stop()
        try await Task.sleep(for: .milliseconds(500))
        for queue in queues { report.stuck[queue] = try inspector.inspect(queue: queue).messages }
        report.deadLettered = try inspector.inspect(queue: topology.deadLetterQueue).messages
        report.seconds = (ContinuousClock.now - started).seconds
        return report
    }
}
