import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import KeelHarness

/// A coordinator and workers as child processes of the bench, in their own namespace and
/// database, against the broker at `KEEL_AMQP_URL`; stopped and cleaned up at the end.
struct BenchDeployment {
    let directory = makeTemporaryDirectory("keel-bench")
    let topology = Topology(namespace: "bench-\(UUID().uuidString.prefix(8).lowercased())")
    let url: AMQPURL
    var processes: [KeelProcess] = []

    let environment: [String: String]
    let concurrency: Int
    /// Deletes the namespace and the folder: at ``stop()``, or on a stop signal.
    private let cleanUp: @Sendable () -> Void
    /// The token of `cleanUp` as the stop signals' clean-up, dropped at ``stop()``.
    private let cleanUpOnSignal: Int
    private(set) var coordinatorStarts = 0

    /// The task queue the workers serve.
    let queue: String

    /// With `countExecutions`, workers log every execution to ``executionLogPath``; `extra` is
    /// added to every process's environment.
    init(
        url: AMQPURL, durability: String, workers: Int, concurrency: Int, countExecutions: Bool = false,
        queue: String = "default",
        extra: [String: String] = [:]
    ) throws {
        self.url = url
        self.queue = queue
        var environment = [
            "KEEL_DB": directory.appendingPathComponent("bench.sqlite").path,
            "KEEL_NAMESPACE": topology.namespace, "KEEL_DURABILITY": durability
        ]
        environment["KEEL_AMQP_URL"] =
            "amqp://\(url.user):\(url.password)@\(url.host):\(url.port)/\(url.vhost == "/" ? "" : url.vhost)"
        if countExecutions { environment["KEEL_EXECUTION_LOG"] = directory.appendingPathComponent("executions.log").path }
        self.environment = environment.merging(extra) { $1 }
        self.concurrency = concurrency
        cleanUp = { [topology, directory] in
            topology.remove(from: url, taskQueues: [queue])
            try? FileManager.default.removeItem(at: directory)
        }
        cleanUpOnSignal = cleanUpOnStopSignal(cleanUp)
        try startCoordinator()
        try startWorkers(workers)
    }

    /// Starts `count` more worker processes on ``queue``.
    mutating func startWorkers(_ count: Int) throws {
        for _ in 0..<count {
            processes.append(
                try KeelProcess(
                    ["worker", "--queue", queue, "--concurrency", "\(concurrency)"], environment: environment,
                    log: directory.appendingPathComponent("worker-\(processes.count).log")))
        }
    }

    var databasePath: String { directory.appendingPathComponent("bench.sqlite").path }
    var executionLogPath: String { directory.appendingPathComponent("executions.log").path }
    var coordinatorLogPath: String { directory.appendingPathComponent("coordinator-\(coordinatorStarts).log").path }

    /// Starts a coordinator process; each start logs to its own file.
    mutating func startCoordinator() throws {
        coordinatorStarts += 1
        processes.insert(
            try KeelProcess(["coordinator"], environment: environment, log: URL(fileURLWithPath: coordinatorLogPath)), at: 0)
    }

    var standbyLogPath: String { directory.appendingPathComponent("coordinator-standby.log").path }

    /// A standby's own history file (with replication).
    var standbyDatabasePath: String { directory.appendingPathComponent("standby.sqlite").path }

    /// Starts a standby coordinator (`--standby`); it takes over when the active one goes. Its
    /// history: the same file, or with `ownFile` (replication) ``standbyDatabasePath``.
    mutating func startStandby(ownFile: Bool = false) throws {
        processes.append(
            try KeelProcess(
                ["coordinator", "--standby"] + (ownFile ? ["--db", standbyDatabasePath] : []), environment: environment,
                log: URL(fileURLWithPath: standbyLogPath)))
    }

    /// `kill -9` of the coordinator process.
    mutating func killCoordinator() {
        processes.removeFirst().kill()
    }

    func stop() {
        cancelCleanUpOnStopSignal(cleanUpOnSignal)
        for process in processes { process.terminate() }
        cleanUp()
    }
}

/// `--workers` and `--concurrency` of the benches that run several workers.
struct BenchWorkerOptions: ParsableArguments {
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Activities each worker runs at once (its prefetch is one more).") var concurrency = 64
}

/// `count` starts of `bench-sequential` with `steps` no-op steps, ids `<prefix>-<n>` (also the request ids).
func sequentialStarts(_ count: Int, steps: Int, prefix: String) throws -> [StartRequest] {
    try (0..<count).map { index in
        StartRequest(
            workflowType: BenchSequential.name, workflowId: "\(prefix)-\(index)",
            input: try Payload(encoding: steps, field: "input"), requestId: "\(prefix)-\(index)")
    }
}

struct LatencyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency",
        abstract: "Per-step latency of a sequential workflow through real coordinator and worker processes and RabbitMQ.")

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Sequential no-op steps.") var steps = 200
    @Option(help: "SQLite durability: normal or full.") var durability = "normal"
    @Option(help: "The coordinator's replicated history: off or stream (each write transaction also to the history stream).")
    var replication: CoordinatorService.Replication = .off
    @OptionGroup var floorOptions: FloorOptions

    func run() async throws {
        let url = try broker.url()
        let (keel, floor) = try await BrokerFloor.around(url: url, enabled: floorOptions.floor) { try await measure(url) }
        var line = String(format: "p50_ms=%.2f p99_ms=%.2f ", keel.p50, keel.p99) + keel.cpu
        if let floor {
            line += String(
                format: " floor_p50_ms=%.2f floor_p99_ms=%.2f floor_ratio=%.2f floor_ratio_p99=%.2f", floor.p50Milliseconds,
                floor.p99Milliseconds, keel.p50 / floor.p50Milliseconds, keel.p99 / floor.p99Milliseconds)
        }
        print(line)
    }

    /// Keel's run; returns its per-step p50 and p99 in milliseconds.
    private func measure(_ url: AMQPURL) async throws -> (p50: Double, p99: Double, cpu: String) {
        let deployment = try BenchDeployment(
            url: url, durability: durability, workers: 1, concurrency: 1, extra: ["KEEL_REPLICATION": replication.rawValue])
        defer { deployment.stop() }
        let client = KeelClient(url: deployment.url, topology: deployment.topology)
        defer { client.close() }
        // Warm up connections and code paths, then measure.
        _ = try await client.startAndConfirm(
            StartRequest(workflowType: BenchSequential.name, workflowId: "warm-up", input: Payload(encoding: 5, field: "input")))
        _ = try await client.waitForResult(workflowId: "warm-up", timeout: 60, poll: 0.05)
        let cpuBefore = ProcessCPU.sample(deployment)
        let begin = ContinuousClock.now
        _ = try await client.startAndConfirm(
            StartRequest(
                workflowType: BenchSequential.name, workflowId: "latency", input: Payload(encoding: steps, field: "input")))
        // Watched in the history file, as bench throughput does, not with a describe job every
        // 50 ms, each on a broker connection of its own (the step latencies measured the same
        // either way: docs/benchmarks.md, "Latency").
        let store = try SQLiteHistoryStore(path: deployment.databasePath)
        var run = try store.latestRun(workflowId: "latency")
        while run?.status.isOpen ?? true, ContinuousClock.now - begin < .seconds(600) {
            try await Task.sleep(for: .milliseconds(100))
            run = try store.latestRun(workflowId: "latency")
        }
        let wall = ContinuousClock.now - begin
        let cpu = ProcessCPU.perStep(from: cpuBefore, to: ProcessCPU.sample(deployment), steps: steps)
        guard let run, run.status == .completed else {
            throw ValidationError("the bench workflow ended \(run?.status.rawValue ?? "never started")")
        }
        let events = try store.events(runId: run.runId)
        var scheduled: [Int64: Date] = [:]
        var started: [Int64: Date] = [:]
        var latencies: [Double] = []
        var toStart: [Double] = []
        var toComplete: [Double] = []
        for event in events {
            guard let ref = event.ref else { continue }
            switch event.kind {
            case .activityScheduled: scheduled[ref] = event.time
            // When it began: a short activity's start comes with its result.
            case .activityStarted: started[ref] = ActivityStartedAttributes.began(event)
            case .activityCompleted:
                guard let begin = scheduled[ref], let middle = started[ref] else { continue }
                latencies.append(event.time.timeIntervalSince(begin) * 1000)
                toStart.append(middle.timeIntervalSince(begin) * 1000)
                toComplete.append(event.time.timeIntervalSince(middle) * 1000)
            default: continue
            }
        }
        latencies.sort()
        toStart.sort()
        toComplete.sort()
        func percentile(_ p: Double, of values: [Double]? = nil) -> Double {
            let values = values ?? latencies
            return values[min(Int(Double(values.count) * p), values.count - 1)]
        }
        print(
            "\(latencies.count) steps, durability \(durability), one worker process, wall \(String(format: "%.2f", wall.seconds)) s"
        )
        print("per step (activity scheduled -> completion recorded, coordinator clock):")
        print(
            String(
                format: "p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms", percentile(0.5), percentile(0.9), percentile(0.99),
                latencies.last ?? 0))
        print(
            String(
                format:
                    "split, p50: scheduled -> began %.2f ms, began -> completion recorded %.2f ms (a start that came with its result: the result's arrival less the activity's run)",
                percentile(0.5, of: toStart), percentile(0.5, of: toComplete)))
        print(cpu.sentence)
        return (percentile(0.5), percentile(0.99), cpu.fields)
    }
}
