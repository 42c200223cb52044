import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import KeelHarness

struct ThroughputBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract:
            "Activities per second through real coordinator and worker processes, RabbitMQ (persistent, confirmed) and the SQLite history."
    )

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Workflows started at once.") var workflows = 2000
    @Option(help: "Sequential no-op activities per workflow.") var steps = 5
    @OptionGroup var workerOptions: BenchWorkerOptions
    @Option(help: "SQLite durability: normal or full.") var durability = "normal"
    @Option(help: "The coordinator's replicated history: off or stream (each write transaction also to the history stream).")
    var replication: CoordinatorService.Replication = .off
    @OptionGroup var floorOptions: FloorOptions

    func run() async throws {
        let url = try broker.url()
        let (perSecond, floor) = try await BrokerFloor.around(url: url, enabled: floorOptions.floor) { try await measure(url) }
        var line =
            String(format: "activities_per_s=%.0f workflows_per_s=%.0f ", perSecond.activities, perSecond.workflows)
            + perSecond.cpu
        if let floor {
            line += String(
                format: " floor_steps_per_s=%.0f floor_ratio=%.3f", floor.stepsPerSecond,
                perSecond.activities / floor.stepsPerSecond)
        }
        print(line)
    }

    /// Keel's run; returns activities and workflows per second.
    private func measure(_ url: AMQPURL) async throws -> (activities: Double, workflows: Double, cpu: String) {
        let deployment = try BenchDeployment(
            url: url, durability: durability, workers: workerOptions.workers, concurrency: workerOptions.concurrency,
            extra: ["KEEL_REPLICATION": replication.rawValue])
        defer { deployment.stop() }
        let client = KeelClient(url: deployment.url, topology: deployment.topology)
        defer { client.close() }
        _ = try await client.startAndConfirm(
            StartRequest(workflowType: BenchSequential.name, workflowId: "warm-up", input: Payload(encoding: 2, field: "input")))
        _ = try await client.waitForResult(workflowId: "warm-up", timeout: 60, poll: 0.05)

        let requests = try sequentialStarts(workflows, steps: steps, prefix: "tp")
        let store = try SQLiteHistoryStore(path: deployment.databasePath)
        let cpuBefore = ProcessCPU.sample(deployment)
        let begin = ContinuousClock.now
        try await client.start(requests)
        let published = ContinuousClock.now - begin
        var completed = 0
        var lastProgress = (count: 0, at: ContinuousClock.now)
        while completed < workflows + 1 {
            try await Task.sleep(for: .milliseconds(20))
            completed = try store.count(status: .completed)
            if completed != lastProgress.count { lastProgress = (completed, ContinuousClock.now) }
            if ContinuousClock.now - lastProgress.at > .seconds(60) {
                throw ValidationError(
                    "no progress for 60 s with \(completed - 1) of \(workflows) completed; logs in \(deployment.directory.path)")
            }
        }
        let elapsed = (ContinuousClock.now - begin).seconds
        let cpu = ProcessCPU.perStep(from: cpuBefore, to: ProcessCPU.sample(deployment), steps: workflows * steps)
        let failed = try store.runs(status: .failed, limit: 10)
        guard failed.isEmpty else {
            throw ValidationError("\(failed.count) bench workflow(s) failed: \(failed[0].failure?.description ?? "")")
        }
        // Where a step's time goes, from the coordinator's clock, over a sample of runs.
        var toStart: [Double] = []
        var toComplete: [Double] = []
        for run in try store.runs(status: .completed, limit: 200) {
            var scheduled: [Int64: Date] = [:]
            var started: [Int64: Date] = [:]
            for event in try store.events(runId: run.runId) {
                guard let ref = event.ref else { continue }
                switch event.kind {
                case .activityScheduled: scheduled[ref] = event.time
                case .activityStarted:
                    // When it began: a short activity's start comes with its result.
                    let began = ActivityStartedAttributes.began(event)
                    started[ref] = began
                    if let at = scheduled[ref] { toStart.append(began.timeIntervalSince(at) * 1000) }
                case .activityCompleted:
                    if let at = started[ref] { toComplete.append(event.time.timeIntervalSince(at) * 1000) }
                default: continue
                }
            }
        }
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? 0 : sorted[min(Int(Double(sorted.count) * p), sorted.count - 1)]
        }
        let activities = workflows * steps
        print(
            "\(workflows) workflows x \(steps) no-op activities, \(workerOptions.workers) worker process(es) x \(workerOptions.concurrency), durability \(durability)"
        )
        print(String(format: "starts published and confirmed in %.2f s; all completed in %.2f s", published.seconds, elapsed))
        print(
            String(
                format: "%.0f activities/s, %.0f workflows/s end to end", Double(activities) / elapsed,
                Double(workflows) / elapsed))
        print(
            String(
                format:
                    "per step, p50/p90: scheduled -> began %.1f/%.1f ms, began -> completion recorded %.1f/%.1f ms (a start that came with its result: the result's arrival less the activity's run)",
                percentile(toStart, 0.5), percentile(toStart, 0.9), percentile(toComplete, 0.5), percentile(toComplete, 0.9)))
        print(cpu.sentence)
        return (Double(activities) / elapsed, Double(workflows) / elapsed, cpu.fields)
    }
}
