import ArgumentParser
import Foundation
import Keel
import KeelTestKit

struct ThroughputBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Activities per second through real coordinator and worker processes, RabbitMQ (persistent, confirmed) and the SQLite history.")

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Workflows started at once.") var workflows = 2000
    @Option(help: "Sequential no-op activities per workflow.") var steps = 5
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Activities each worker runs at once (its prefetch).") var concurrency = 64
    @Option(help: "SQLite durability: normal or full.") var durability = "normal"

    func run() async throws {
        let deployment = try BenchDeployment(url: try broker.url(), durability: durability, workers: workers, concurrency: concurrency)
        defer { deployment.stop() }
        let client = KeelClient(url: deployment.url, topology: deployment.topology)
        defer { client.close() }
        _ = try await client.startAndConfirm(StartRequest(workflowType: BenchSequential.name, workflowId: "warm-up", input: Payload(encoding: 2, field: "input")))
        _ = try await client.waitForResult(workflowId: "warm-up", timeout: 60, poll: 0.05)

        let requests = try (0..<workflows).map { index in
            StartRequest(workflowType: BenchSequential.name, workflowId: "tp-\(index)", input: try Payload(encoding: steps, field: "input"),
                         requestId: "tp-\(index)")
        }
        let store = try SQLiteHistoryStore(path: deployment.databasePath)
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
                throw ValidationError("no progress for 60 s with \(completed - 1) of \(workflows) completed; logs in \(deployment.directory.path)")
            }
        }
        let elapsed = (ContinuousClock.now - begin).seconds
        let failed = try store.runs(status: .failed, limit: 10)
        guard failed.isEmpty else { throw ValidationError("\(failed.count) bench workflow(s) failed: \(failed[0].failure?.description ?? "")") }
        let activities = workflows * steps
        print("\(workflows) workflows x \(steps) no-op activities, \(workers) worker process(es) x \(concurrency), durability \(durability)")
        print(String(format: "starts published and confirmed in %.2f s; all completed in %.2f s", published.seconds, elapsed))
        print(String(format: "%.0f activities/s, %.0f workflows/s end to end", Double(activities) / elapsed, Double(workflows) / elapsed))
        print(String(format: "activities_per_s=%.0f workflows_per_s=%.0f", Double(activities) / elapsed, Double(workflows) / elapsed))
    }
}
