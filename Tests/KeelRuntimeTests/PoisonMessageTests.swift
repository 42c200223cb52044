import Foundation
import Keel
import KeelTestKit
import Testing

/// Messages no Keel process may choke on, through real processes and a real broker: every one is
/// handled to an end (applied, refused with a reply, or dead-lettered with the reason) and the
/// processes serve on.
@Suite("Poison messages", .tags(.integration), .timeLimit(.minutes(6)))
struct PoisonMessageTests {
    @Test func oversizedAndOverlongJobsAreRefusedAtTheDoorAndTheCoordinatorServesOn() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        let topology = deployment.topology
        let publisher = AMQPPublisher(url: deployment.url, topology: topology)
        defer { publisher.close() }
        func job(_ type: WireType, _ body: String, id: String, headers: [String: String] = [:]) -> AMQPMessage {
            AMQPMessage(
                exchange: topology.jobsExchange, routingKey: Topology.jobsRoutingKey, body: Data(body.utf8), type: type.rawValue,
                messageId: id, headers: ["keel-type": type.rawValue, "keel-version": "1"].merging(headers) { $1 })
        }
        let bigInput = String(repeating: "x", count: 10 * 1024 * 1024)
        let longId = String(repeating: "w", count: 1024 * 1024)
        try await publisher.publish([
            job(
                .start, #"{"workflowType":"bench-sequential","workflowId":"huge-input","input":"\#(bigInput)"}"#, id: "huge-input"
            ),
            job(
                .signal,
                #"{"workflowId":"anyone","name":"approve","input":"\#(String(repeating: "s", count: 3 * 1024 * 1024))"}"#,
                id: "huge-signal"),
            job(.start, #"{"workflowType":"bench-sequential","workflowId":"\#(longId)","input":1}"#, id: "long-id"),
            job(
                .start, #"{"workflowType":"bench-sequential","workflowId":"big-headers","input":1}"#, id: "big-headers",
                headers: ["x-padding": String(repeating: "h", count: 20_000)]),
            // Only `budget` among the options: the others take their documented defaults.
            job(
                .start,
                #"{"workflowType":"bench-sequential","workflowId":"partial-options","input":2,"options":{"budget":{"maxTokens":1000}}}"#,
                id: "partial")
        ])
        let partial = try await deployment.client.waitForResult(workflowId: "partial-options", timeout: 60)
        #expect(partial.status == .completed, "\(partial.failure?.description ?? "")")
        #expect(partial.options.budget?.maxTokens == 1000)
        #expect(partial.options.idConflictPolicy == .useExisting)

        var items: [DeadLetterItem] = []
        #expect(
            try await eventually(20) {
                items = try DeadLetterQueue(url: deployment.url, topology: topology).list()
                return items.count >= 4
            })
        let reasons = Dictionary(items.map { ($0.id, $0.reason) }) { first, _ in first }
        #expect(reasons["huge-input"]?.contains("start job body is 104") == true, "\(reasons["huge-input"] ?? "missing")")
        #expect(reasons["huge-signal"]?.contains("job body is 3") == true, "\(reasons["huge-signal"] ?? "missing")")
        #expect(reasons["long-id"]?.contains("over the") == true, "\(reasons["long-id"] ?? "missing")")
        #expect(reasons["big-headers"]?.contains("start job headers is") == true, "\(reasons["big-headers"] ?? "missing")")
        // Refused before anything was committed.
        let store = try deployment.store()
        #expect(try store.latestRun(workflowId: longId) == nil)
        #expect(try store.latestRun(workflowId: "huge-input") == nil)
        #expect(try store.latestRun(workflowId: "big-headers") == nil)

        // Still serving: a start after them completes.
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-sequential", workflowId: "after-poison", input: Payload(encoding: 3, field: "input")))
        let after = try await deployment.client.waitForResult(workflowId: "after-poison", timeout: 60)
        #expect(after.status == .completed)
        #expect(deployment.coordinator?.exists == true)
    }

    /// No worker runs here: the test reports the start as one worker and sends a result as
    /// another, so nothing ends the attempt while the test looks (a real worker's activity ended
    /// on its own, and a suite loaded enough to delay the test's polling missed it running).
    @Test func aResultInTheNameOfAWorkerThatDoesNotHoldTheAttemptIsRefused() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let input = try Payload(encoding: StepsInput(steps: 1, milliseconds: 0, heartbeatTimeoutSeconds: 3600), field: "input")
        let started = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "bench-steps", workflowId: "forged", input: input))
        let store = try deployment.store()
        let activity = try #require(try store.activities(runId: started.runId).first, "scheduled in the start's commit")
        let publisher = AMQPPublisher(url: deployment.url, topology: deployment.topology)
        defer { publisher.close() }
        func report(_ type: WireType, _ body: some Encodable) async throws {
            try await publisher.send(
                type, body, exchange: deployment.topology.resultsExchange, routingKey: Topology.resultsRoutingKey)
        }
        func result(_ worker: String, _ value: Int) throws -> ActivityResult {
            ActivityResult(
                runId: started.runId, activityId: activity.activityId, attempt: activity.attempt, worker: worker,
                outcome: .completed(try Payload(encoding: value, field: "r")))
        }
        try await report(
            .started,
            ActivityStarted(
                runId: started.runId, activityId: activity.activityId, attempt: activity.attempt, worker: "holder:1",
                time: Date()))
        #expect(try await eventually(60) { try store.activities(runId: started.runId).first?.startedBy == "holder:1" })

        try await report(.result, try result("forger:1", 999))
        let coordinatorLog = deployment.directory.appendingPathComponent("coordinator.log")
        let refusal = "was started by holder:1, not by forger:1"
        #expect(
            try await eventually(60) { (try? String(contentsOf: coordinatorLog, encoding: .utf8))?.contains(refusal) == true },
            "the coordinator logs the refusal")
        #expect(try store.activities(runId: started.runId).first?.state == .started, "the forged result ended nothing")

        try await report(.result, try result("holder:1", 0))
        let run = try await deployment.client.waitForResult(workflowId: "forged", timeout: 60)
        #expect(run.status == .completed)
        #expect(run.result?.json == "0", "the holder's value, not the forged 999")
    }

    @Test func signalCancelAndTerminateOfAnUnknownWorkflowExitNonZeroWithTheReason() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        for arguments in [["signal", "nobody", "approve"], ["cancel", "nobody"], ["terminate", "nobody", "--reason", "test"]] {
            let refused = try await deployment.keel(arguments)
            #expect(refused.status == 1, "\(arguments): \(refused.output)")
            #expect(refused.output.contains("no run with this id"), "\(arguments): \(refused.output)")
        }
        let published = try await deployment.keel(["signal", "nobody", "approve", "--no-wait"])
        #expect(published.status == 0, "\(published.output)")
        let negative = try await deployment.keel(["start", "bench-sequential", "--id", "n", "--budget-tokens", "-5"])
        #expect(negative.status != 0)
        #expect(negative.output.contains("maxTokens must be positive"), "\(negative.output)")
        let file = deployment.directory.appendingPathComponent("large.json")
        try Data("\"\(String(repeating: "x", count: 2_200_000))\"".utf8).write(to: file)
        let tooLarge = try await deployment.keel(["start", "bench-sequential", "--id", "n", "--input", "@\(file.path)"])
        #expect(tooLarge.status != 0)
        #expect(tooLarge.output.contains("over the 2097152-byte payload limit"), "\(tooLarge.output.prefix(300))")
    }

    @Test func startTakesTheIdPoliciesAndNamesABadOne() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        // No worker: the run stays open.
        let input = #"{"steps": 1, "milliseconds": 1000}"#
        let first = try await deployment.keel(["start", "bench-steps", "--id", "dup", "--input", input])
        #expect(first.status == 0, "\(first.output)")
        #expect(try await eventually(20) { try deployment.store().latestRun(workflowId: "dup") != nil })
        let refused = try await deployment.keel([
            "start", "bench-steps", "--id", "dup", "--input", input, "--id-conflict-policy", "fail", "--wait"
        ])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("WorkflowAlreadyStarted"), "\(refused.output)")
        let bad = try await deployment.keel(["start", "bench-steps", "--id", "dup", "--id-reuse-policy", "sometimes"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("allowDuplicate, allowDuplicateFailedOnly, rejectDuplicate"), "\(bad.output)")
    }

    @Test func anHTTPHostThatCannotBeBoundStopsTheCoordinatorWithAnError() async throws {
        let deployment = try Deployment()
        // Not an address of this machine (TEST-NET-1); the token keeps the access check quiet.
        // Run to its end: it must exit by itself, with an error.
        deployment.extraEnvironment = ["KEEL_API_TOKEN": "secret"]
        let ended = try await deployment.keel(["coordinator", "--http-host", "192.0.2.1", "--http-port", "\(freeLocalPort())"])
        #expect(ended.status != 0)
        #expect(ended.output.contains("cannot serve"), "\(ended.output)")
    }

    /// Thousands of generated and mutated messages on every queue a Keel process consumes; then
    /// a normal run must complete, both processes must still run, and once they stop nothing may
    /// be left unacknowledged. `KEEL_FUZZ_SEED` replays a failing seed; `KEEL_FUZZ_MESSAGES` sets
    /// the count (`keel bench fuzz` is the long soak).
    @Test func fuzzingEveryQueueLeavesTheProcessesServingAndNothingStuck() async throws {
        let seed = MessageFuzzer.seedFromEnvironment()
        let count = ProcessInfo.processInfo.environment["KEEL_FUZZ_MESSAGES"].flatMap(Int.init) ?? 6_000
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 8)
        let campaign = FuzzCampaign(url: deployment.url, topology: deployment.topology, seed: seed, messages: count)
        let report = try await campaign.run(
            alive: { deployment.coordinator?.exists == true && deployment.workers.allSatisfy { $0.exists } },
            stop: {
                for process in [deployment.coordinator].compactMap({ $0 }) + deployment.workers {
                    try? await offPool { process.terminate() }
                }
            })
        print(
            "fuzz seed \(seed): \(report.published), \(report.deadLettered) dead-lettered, \(String(format: "%.1f", report.seconds)) s"
        )
        let names = (try? FileManager.default.contentsOfDirectory(atPath: deployment.directory.path)) ?? []
        let logs = names.filter { $0.hasSuffix(".log") }.sorted().map { name in
            // A crash report's head says what failed; the rest of a log, its last lines.
            let text = (try? String(contentsOf: deployment.directory.appendingPathComponent(name), encoding: .utf8)) ?? ""
            let lines = text.split(separator: "\n")
            let crash = lines.firstIndex { $0.contains("Fatal error") || $0.contains("Program crashed") }
            let shown = crash.map { Array(lines[$0...].prefix(40)) } ?? Array(lines.suffix(40))
            return "--- \(name)\n" + shown.joined(separator: "\n")
        }.joined(separator: "\n")
        #expect(report.finalRun == .completed, "seed \(seed): \(report.failure ?? "")\n\(logs)")
        #expect(report.survived, "the coordinator and the worker survived (seed \(seed))\n\(logs)")
        #expect(report.stuck.values.allSatisfy { $0 == 0 }, "left unacknowledged: \(report.stuck) (seed \(seed))")
        #expect(report.deadLettered > 0, "refusals reached keel.dead")
        #expect(
            !logs.contains("coordinator stopping:") && !logs.contains("worker stopping:"), "a serving loop ended (seed \(seed))")
    }
}

/// A coordinator whose history cannot be written stops with an error, so a supervisor restarts
/// it, instead of staying up with a jobs queue nobody serves.
@Suite("A coordinator that cannot write", .tags(.integration), .timeLimit(.minutes(3)))
struct UnwritableHistoryTests {
    @Test func aFailedCommitStopsTheCoordinatorWithANonZeroExit() async throws {
        let deployment = try Deployment()
        // Files may grow to 1 MiB (bash counts 1024-byte blocks); past that a write fails with
        // EFBIG (SIGXFSZ ignored) and SQLite's commit with it. The shell logs the exit status
        // (Foundation's view of a child's exit lags on a loaded machine).
        let log = deployment.directory.appendingPathComponent("coordinator.log")
        let coordinator = try KeelProcess(
            ["-c", "trap '' XFSZ; ulimit -f 1024; \"$0\" coordinator; echo \"exit status $?\"", KeelProcess.binary.path],
            environment: deployment.environment, log: log, binary: URL(fileURLWithPath: "/bin/bash"))
        defer { coordinator.terminate() }
        func logText() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        #expect(await eventually(60) { logText().contains("coordinator running") })
        let input = try Payload(encoding: String(repeating: "x", count: 400_000), field: "input")
        for index in 0..<8 {
            try await deployment.client.start(
                StartRequest(workflowType: "call-activity", workflowId: "big-\(index)", input: input))
        }
        #expect(await eventually(60) { logText().contains("exit status") }, "the coordinator exits")
        #expect(logText().contains("exit status ") && !logText().contains("exit status 0"), "\(logText().suffix(300))")
        #expect(logText().contains("coordinator stopping:"), "\(logText().suffix(2000))")
        #expect(logText().contains("StoreError"), "\(logText().suffix(2000))")
    }
}
