import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import KeelHarness

struct RecoveryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract:
            "kill -9 the coordinator with --workflows open workflows mid-run; time until they are replayed and progressing again (by a restarted coordinator, or with --standby by one waiting to take over), then check that none is lost and no completed step runs again."
    )

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Open workflows when the coordinator is killed.") var workflows = 10_000
    @Option(help: "Sequential no-op activities per workflow.") var steps = 5
    @OptionGroup var workerOptions: BenchWorkerOptions
    @Option(help: "Seconds of progress between the workers starting and the kill.") var runFor = 1.0
    @Flag(help: "Run a standby coordinator on the same history before the kill and let it take over, instead of restarting.")
    var standby = false
    @Option(
        help:
            "With --standby: stream replicates the history through the namespace's log into the standby's own file, and the active's file is deleted with the kill (the machine is gone); off shares one file."
    )
    var replication: CoordinatorService.Replication = .off

    func run() async throws {
        // Workers join once every workflow is recorded, so all of them are open at the kill.
        guard replication == .off || standby else { throw ValidationError("--replication stream needs --standby") }
        var deployment = try BenchDeployment(
            url: try broker.url(), durability: "normal", workers: 0, concurrency: workerOptions.concurrency,
            countExecutions: true,
            extra: ["KEEL_REPLICATION": replication.rawValue])
        defer { deployment.stop() }
        let client = KeelClient(url: deployment.url, topology: deployment.topology)
        defer { client.close() }
        var store = try SQLiteHistoryStore(path: deployment.databasePath)

        let requests = try sequentialStarts(workflows, steps: steps, prefix: "rec")
        try await client.start(requests)
        try await until("all \(workflows) workflows recorded", timeout: 300) { try store.count(status: .running) >= workflows }
        if standby {
            try deployment.startStandby(ownFile: replication == .stream)
            try await until("the standby waits to take over", timeout: 60) {
                ((try? String(contentsOfFile: deployment.standbyLogPath, encoding: .utf8)) ?? "").contains("waiting to take over")
            }
        }
        try deployment.startWorkers(workerOptions.workers)
        try await Task.sleep(for: .seconds(double: runFor))

        let open = try store.count(status: .running)
        guard open > 0 else {
            throw ValidationError(
                "every workflow finished within --run-for \(runFor) s, before the kill; use more --workflows or --steps, or a shorter --run-for"
            )
        }
        let killedAt = Date()
        deployment.killCoordinator()
        let completedBefore = Set(try store.eventRefs(kind: .activityCompleted, to: killedAt).map { "\($0.runId)/\($0.ref)" })
        print("killed the coordinator with \(open) open workflows, \(completedBefore.count) activities completed")
        if replication == .stream {
            // The machine is gone: only the standby's own file, fed by the log, is left.
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: deployment.databasePath + suffix) }
            print("deleted the active coordinator's history \(deployment.databasePath)")
            store = try SQLiteHistoryStore(path: deployment.standbyDatabasePath)
        }

        let restart = ContinuousClock.now
        let restartedAt = Date()
        if !standby { try deployment.startCoordinator() }
        let logPath = standby ? deployment.standbyLogPath : deployment.coordinatorLogPath
        try await until("the coordinator recovered", timeout: 120) {
            ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").contains("coordinator running")
        }
        let serving = ContinuousClock.now - restart
        try await until("a result applied after the \(standby ? "takeover" : "restart")", timeout: 120, poll: 0.005) {
            try !store.eventRefs(kind: .activityCompleted, from: restartedAt, limit: 1).isEmpty
        }
        let progressing = ContinuousClock.now - restart
        let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        if let line = log.split(separator: "\n").first(where: { $0.contains("recovered") }) { print(line) }

        try await until("every workflow completed", timeout: 600) { try store.count(status: .completed) >= workflows }
        let completed = try store.count(status: .completed)
        let executions = ExecutionLog.read(deployment.executionLogPath)
        let reexecuted = executions.filter { $0.time > killedAt && completedBefore.contains("\($0.runId)/\($0.activityId)") }
            .count
        let attempts = executions.map { "\($0.runId)/\($0.activityId)/\($0.attempt)" }
        let duplicates = attempts.count - Set(attempts).count
        let from = standby ? "kill (the standby takes over)" : "restart"
        print(
            "\(from) -> recovered and consuming: \(String(format: "%.2f", serving.seconds)) s; \(from) -> first result applied: \(String(format: "%.2f", progressing.seconds)) s"
        )
        print(
            "\(completed) of \(workflows) completed; \(executions.count) executions (\(duplicates) duplicate attempt deliveries)")
        print(String(format: "recovery_s=%.2f lost=%d reexecuted=%d", progressing.seconds, workflows - completed, reexecuted))
    }

    /// Polls `condition` until it holds; fails after `timeout`.
    private func until(_ what: String, timeout: Double, poll: Double = 0.05, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition() {
            guard Date() < deadline else { throw ValidationError("timed out waiting for \(what)") }
            try await Task.sleep(for: .seconds(double: poll))
        }
    }
}

extension CoordinatorService.Replication: ExpressibleByArgument {}
