import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import KeelHarness
import KeelMockLLM
import Logging

/// `keel bench llm-capacity`: many LLM pipelines against a rate-limited `keel mock-llm`, with the
/// coordinator admitting calls by capacity and with `--admission off`, side by side.
struct LLMCapacityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm-capacity",
        abstract:
            "Run --workflows pipelines of --steps LLM calls against keel mock-llm limited to --rpm and --tpm, with admission by capacity and with --admission off; report 429s, token use against the limit, admission waits and budget overshoot."
    )

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Workflows, all started at once.") var workflows = 200
    @Option(help: "LLM calls per workflow.") var steps = 10
    @Option(help: "Calls each workflow has in flight at once.") var parallel = 2
    @Option(help: "LLM worker processes.") var workers = 4
    @Option(help: "Calls each worker makes at once.") var concurrency = 16
    @Option(help: "The mock's limit: requests per minute.") var rpm = 600
    @Option(help: "The mock's limit: tokens per minute.") var tpm = 100_000
    @Option(help: "Output tokens of an answer: at least.") var outputMin = 300
    @Option(help: "Output tokens of an answer: at most (also each request's maxTokens).") var outputMax = 1_500
    @Option(help: "Latency of an answer, ms: at least.") var latencyMin = 200
    @Option(help: "Latency of an answer, ms: at most.") var latencyMax = 800
    @Option(help: "Characters of each prompt (4 per token).") var promptCharacters = 400
    @Option(help: "Each run's token budget as a fraction of what its calls need on average (0: no budget).")
    var budgetFraction = 0.8
    @Option(help: "on, off, or both (off first).") var admission = "both"
    @Flag(help: "Leave the providers' limits out of keel.yaml: the coordinator learns them from the headers alone.")
    var learnOnly = false

    struct Outcome {
        var calls = 0
        var rateLimited = 0
        var tokens = 0
        var minutes = 0.0
        var answered = 0
        var failed: [String: Int] = [:]
        var waitP95Milliseconds = 0.0
        var overshootCalls = 0.0

        /// Token use once the mock's initial full bucket is spent: what came on top of it, per minute.
        func steadyTokensPerMinute(limit: Int) -> Double? {
            minutes >= 1 ? Double(tokens - limit) / minutes : nil
        }
    }

    func validate() throws {
        guard ["on", "off", "both"].contains(admission) else { throw ValidationError("--admission must be on, off or both") }
        guard workflows > 0, steps > 0, parallel > 0, workers > 0, concurrency > 0, rpm > 0, tpm > 0 else {
            throw ValidationError("--workflows, --steps, --parallel, --workers, --concurrency, --rpm and --tpm must be positive")
        }
        guard outputMin > 0, outputMax >= outputMin, latencyMin >= 0, latencyMax >= latencyMin else {
            throw ValidationError("need 0 < --output-min <= --output-max and 0 <= --latency-min <= --latency-max")
        }
        guard budgetFraction >= 0 else { throw ValidationError("--budget-fraction must be 0 or more") }
    }

    func run() async throws {
        let modes = admission == "both" ? ["off", "on"] : [admission]
        var outcomes: [String: Outcome] = [:]
        for mode in modes {
            let outcome = try await measure(admission: mode)
            outcomes[mode] = outcome
            let steady = outcome.steadyTokensPerMinute(limit: tpm).map { String(format: "%.0f", $0) } ?? "n/a (under a minute)"
            print(
                String(
                    format:
                        "admission %@: %d calls in %.1f min, %d answered 429 (%.1f %%), %d tokens, steady %@ tokens/min of %d; runs: %d calls answered, failed %@; admission wait p95 %.0f ms; budget overshoot %.2f calls at most",
                    mode, outcome.calls, outcome.minutes, outcome.rateLimited,
                    100 * Double(outcome.rateLimited) / Double(max(outcome.calls, 1)), outcome.tokens, steady, tpm,
                    outcome.answered, outcome.failed.isEmpty ? "nothing" : outcome.failed.description,
                    outcome.waitP95Milliseconds, outcome.overshootCalls))
        }
        guard let main = outcomes["on"] ?? outcomes["off"] else { return }
        let steady = main.steadyTokensPerMinute(limit: tpm)
        print(
            "calls=\(main.calls) rate_limited=\(main.rateLimited) rate_limited_off=\(outcomes["off"].map { "\($0.rateLimited)" } ?? "n/a")"
                + " tokens_per_min=\(steady.map { String(format: "%.0f", $0) } ?? "n/a")"
                + " limit_use_pct=\(steady.map { String(format: "%.1f", 100 * $0 / Double(tpm)) } ?? "n/a")"
                + String(
                    format: " admission_wait_p95_ms=%.0f budget_overshoot_calls=%.2f", main.waitP95Milliseconds,
                    main.overshootCalls))
    }

    private func measure(admission: String) async throws -> Outcome {
        // The mock, rate limited, in this process.
        var logger = Logger(label: "keel.mock-llm")
        logger.logLevel = .critical
        let scenario = MockScenario(
            rules: [
                MockRule(responses: [
                    MockResponse(
                        delayMs: latencyMin, delayMsMax: latencyMax,
                        usage: MockUsage(outputTokens: outputMin, outputTokensMax: outputMax))
                ])
            ],
            limits: [MockLimits(requestsPerMinute: rpm, tokensPerMinute: tpm)])
        let mock = MockLLMServer(port: 0, scenario: scenario, logger: logger)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let serving = Task { try await mock.run(handleSignals: false) { continuation.yield($0) } }
        defer { serving.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw ValidationError("the mock did not start") }

        let configDirectory = makeTemporaryDirectory("keel-bench-llm")
        defer { try? FileManager.default.removeItem(at: configDirectory) }
        let config = configDirectory.appendingPathComponent("keel.yaml")
        let limits = learnOnly ? "" : "\n      limits: {requestsPerMinute: \(rpm), tokensPerMinute: \(tpm)}"
        try """
        llm:
          providers:
            - name: mock
              api: openai
              baseURL: http://127.0.0.1:\(port)/v1
              model: bench-model
              maxTokens: \(outputMax)\(limits)
        """.write(to: config, atomically: true, encoding: .utf8)

        let deployment = try BenchDeployment(
            url: try broker.url(), durability: "normal", workers: workers, concurrency: concurrency, queue: "llm",
            extra: ["KEEL_CONFIG": config.path, "KEEL_ADMISSION": admission])
        defer { deployment.stop() }
        let client = KeelClient(url: deployment.url, topology: deployment.topology)
        defer { client.close() }
        let store = try SQLiteHistoryStore(path: deployment.databasePath)

        // What one call needs on average, for the budgets.
        let perCall = Double(promptCharacters / 4 + 10) + Double(outputMin + outputMax) / 2
        let budget = budgetFraction > 0 ? Int64(budgetFraction * perCall * Double(steps)) : nil
        let input = BenchLLM.Input(calls: steps, parallel: parallel, maxTokens: outputMax, promptCharacters: promptCharacters)
        let requests = try (0..<workflows).map { index in
            try StartRequest(
                BenchLLM.self, id: "llm-\(admission)-\(index)", input: input,
                options: WorkflowOptions(budget: budget.map { SpendLimit(maxTokens: $0) }))
        }
        let started = Date()
        try await client.start(requests)
        let deadline = started.addingTimeInterval(3600)
        while try store.count(status: .completed) < workflows {
            guard Date() < deadline else { throw ValidationError("the runs did not complete within an hour") }
            try await Task.sleep(for: .milliseconds(200))
        }

        var outcome = Outcome()
        let log = await mock.requests()
        outcome.calls = log.count
        outcome.rateLimited = log.filter { $0.status == 429 }.count
        outcome.tokens = log.reduce(0) { $0 + ($1.inputTokens ?? 0) + ($1.outputTokens ?? 0) }
        if let first = log.first?.time, let last = log.last?.time { outcome.minutes = last.timeIntervalSince(first) / 60 }
        var waits: [Double] = []
        for run in try store.runs(status: .completed, limit: workflows) {
            let output = try run.result?.decode(BenchLLM.Output.self)
            outcome.answered += output?.answered ?? 0
            for (type, count) in output?.failed ?? [:] { outcome.failed[type, default: 0] += count }
            let events = try store.events(runId: run.runId)
            // Overshoot in calls: over the budget, in units of the run's largest call.
            let largestCall = events.compactMap(Spend.reported(by:)).map(\.totalTokens).max() ?? 0
            if let budget, run.spend.totalTokens > budget, largestCall > 0 {
                outcome.overshootCalls = max(
                    outcome.overshootCalls, Double(run.spend.totalTokens - budget) / Double(largestCall))
            }
            waits += AttemptTimeline.spans(events).compactMap(\.capacityWaitSeconds)
        }
        waits.sort()
        if !waits.isEmpty { outcome.waitP95Milliseconds = waits[min(Int(Double(waits.count) * 0.95), waits.count - 1)] * 1000 }
        return outcome
    }
}
