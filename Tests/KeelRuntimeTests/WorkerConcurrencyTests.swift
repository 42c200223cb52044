import Foundation
import Keel
import KeelTestKit
import Testing

/// A `keel worker` process runs no more than its `--concurrency` at once: tasks are acknowledged
/// as they start, so the prefetch window alone does not bound them, its slots do.
@Suite("Worker concurrency", .tags(.integration), .timeLimit(.minutes(3)))
struct WorkerConcurrencyTests {
    @Test func aWorkerRunsAtMostItsConcurrencyAtOnce() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 2)
        let sleep = 1500
        let ids = (1...6).map { "slots-\($0)" }
        try await deployment.startSteps(ids, StepsInput(steps: 1, milliseconds: sleep))
        for id in ids {
            let run = try await deployment.client.waitForResult(workflowId: id, timeout: 60)
            #expect(run.status == .completed)
        }
        // Each activity sleeps `sleep` ms from when the worker began it: the most that ran at
        // any one moment is the most beginnings inside one such span (less a little slack).
        let began = deployment.executions.map(\.time).sorted()
        #expect(began.count == ids.count)
        let span = Double(sleep) / 1000 - 0.05
        let mostAtOnce =
            began.indices.map { index in
                began[index...].prefix { $0.timeIntervalSince(began[index]) < span }.count
            }.max() ?? 0
        #expect(mostAtOnce == 2, "began: \(began.map { $0.timeIntervalSince(began[0]) })")
    }

    /// A worker busy with a long activity does not keep the next task from a worker that is free:
    /// it took that task (its prefetch window had room) but gives it back once its only slot runs
    /// past the start report, and the second worker runs it at once.
    @Test func aTaskQueuedOnABusyWorkerGoesToAFreeOne() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 1)
        let sleep = 6000
        try await deployment.startSteps(["busy-1", "busy-2"], StepsInput(steps: 1, milliseconds: sleep))
        #expect(await eventually(20) { deployment.executions.count == 1 })
        try await Task.sleep(for: .milliseconds(500))
        try deployment.startWorker(concurrency: 1)
        let secondStarted = Date()
        #expect(await eventually(30) { deployment.executions.count == 2 })
        let executions = deployment.executions
        #expect(Set(executions.map(\.worker)).count == 2, "one task on each worker: \(executions)")
        let waited = executions[1].time.timeIntervalSince(secondStarted)
        #expect(
            waited < Double(sleep) / 1000 / 2,
            "the second task began \(waited) s after the second worker, not once the first ended")
        for id in ["busy-1", "busy-2"] {
            #expect(try await deployment.client.waitForResult(workflowId: id, timeout: 60).status == .completed)
        }
        #expect(executions.map(\.attempt) == [1, 1])
    }
    /// A worker kept full by activities that outlive the start report hands back the one task it
    /// took beyond its slots, not a window's worth at every turnover: once a slot frees it takes
    /// one task for it, not the slots plus one (which it would hand back as soon as the new
    /// activity passed its start report), so the tasks run in turn at the cost of no attempt.
    @Test func aSaturatedWorkerDoesNotChurnTasksBackToTheQueue() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 4)
        let ids = (1...16).map { "saturated-\($0)" }
        try await deployment.startSteps(ids, StepsInput(steps: 1, milliseconds: 1000))
        for id in ids {
            #expect(try await deployment.client.waitForResult(workflowId: id, timeout: 60).status == .completed)
        }
        let log = try String(contentsOf: deployment.directory.appendingPathComponent("worker-0.log"), encoding: .utf8)
        let handedBack = log.components(separatedBy: "handed back unrun").count - 1
        #expect(handedBack <= 3, "\(handedBack) tasks handed back for \(ids.count) run on 4 slots")
        #expect(deployment.executions.map(\.attempt) == Array(repeating: 1, count: ids.count))
    }
}
