import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import KeelHarness

struct FuzzBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract:
            "Soak a coordinator and a worker (real processes) with --messages generated and mutated messages on every queue they consume; then a normal run must complete, both must still run, and nothing may be left unacknowledged."
    )

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Messages, spread over the jobs, results and task queues.") var messages = 20_000
    @Option(help: "Seed (default: $KEEL_FUZZ_SEED or a new one); the same seed sends the same messages.") var seed: UInt64?

    func run() async throws {
        let seed = self.seed ?? MessageFuzzer.seedFromEnvironment()
        print("fuzzing with seed \(seed) (repeat with --seed \(seed))")
        let deployment = try BenchDeployment(url: try broker.url(), durability: "normal", workers: 1, concurrency: 8)
        defer { deployment.stop() }
        let processes = deployment.processes
        let campaign = FuzzCampaign(url: deployment.url, topology: deployment.topology, seed: seed, messages: messages)
        let report = try await campaign.run(
            alive: { processes.allSatisfy(\.exists) },
            stop: { for process in processes { process.terminate() } })
        print("published \(report.published.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        if let failure = report.failure { print("the run after the messages: \(failure)") }
        print("processes survived: \(report.survived ? "yes" : "no"); left unacknowledged: \(report.stuck.values.reduce(0, +))")
        print(
            "fuzz_messages=\(messages) seed=\(seed) dead_lettered=\(report.deadLettered) final_run=\(report.finalRun?.rawValue ?? "unfinished") "
                + "survived=\(report.survived ? "yes" : "no") stuck=\(report.stuck.values.reduce(0, +)) seconds="
                + String(format: "%.1f", report.seconds))
        if !report.passed { throw ExitCode(1) }
    }
}
