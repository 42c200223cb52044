import ArgumentParser
import Foundation
import Keel
import KeelHarness

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure Keel on this machine.",
        subcommands: [
            ReplayBench.self, LatencyBench.self, ThroughputBench.self, RecoveryBench.self, FuzzBench.self, FloorBench.self,
            LLMCapacityBench.self
        ])
}

struct ReplayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Record a history of about --events events through a real coordinator and SQLite file, then time replaying it.")

    @Option(help: "Approximate history length.") var events = 10_000
    @Option(help: "Timed replays.") var iterations = 20

    func run() async throws {
        let directory = makeTemporaryDirectory("keel-bench")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteHistoryStore(path: directory.appendingPathComponent("bench.sqlite").path)
        let broker = InMemoryBroker()
        let workers = InProcessWorkers(broker: broker, activities: BuiltIn.activities)
        let coordinator = Coordinator(store: store, workflows: BuiltIn.workflows, publisher: broker)
        // Three events per activity (scheduled, started, completed) plus start and completion.
        let steps = max((events - 2) / 3, 1)
        let recordStart = ContinuousClock.now
        _ = try await coordinator.start(try StartRequest(BenchSequential.self, id: "bench", input: steps))
        try await workers.drain(coordinator)
        let recordTime = ContinuousClock.now - recordStart
        let history = try store.export(workflowId: "bench")
        guard let run = try store.latestRun(workflowId: "bench"), run.status == .completed else {
            throw ValidationError("the bench workflow did not complete")
        }
        print("recorded \(history.events.count) events (\(steps) activities) in \(format(recordTime))")

        let replayer = HistoryReplayer(workflows: BuiltIn.workflows)
        var replayTimes: [Duration] = []
        var loadTimes: [Duration] = []
        for _ in 0..<iterations {
            let loadStart = ContinuousClock.now
            let loaded = try store.export(workflowId: "bench")
            let replayStart = ContinuousClock.now
            let report = try replayer.replay(loaded)
            let end = ContinuousClock.now
            guard report.nondeterminism == nil, case .completeWorkflow = report.outcome else {
                throw ValidationError("replay did not reproduce the run")
            }
            loadTimes.append(replayStart - loadStart)
            replayTimes.append(end - replayStart)
        }
        let count = Double(history.events.count)
        let replay = median(replayTimes)
        let load = median(loadTimes)
        print(
            "median of \(iterations): load from SQLite \(format(load)), replay \(format(replay)), together \(format(load + replay))"
        )
        print(
            String(
                format: "replay only: %.0f events/s; load + replay: %.0f events/s",
                count / replay.seconds, count / (load + replay).seconds))
        print(String(format: "events=%d events_per_s=%.0f", history.events.count, count / replay.seconds))
    }

    private func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

    private func format(_ duration: Duration) -> String { String(format: "%.1f ms", duration.seconds * 1000) }
}
