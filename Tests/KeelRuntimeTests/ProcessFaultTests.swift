import Foundation
import GRDBSQLite
import Keel
import KeelTestKit
import Testing

struct StepsInput: Codable, Sendable {
    var steps: Int
    var milliseconds: Int
    var heartbeatTimeoutSeconds: Double = 5
    var maximumAttempts: Int? = nil
    var heartbeats: Bool? = nil
}

/// Fault tests with real processes and a real broker. Serialized: they share the broker's queues.
@Suite("Faults across processes", .tags(.integration), .timeLimit(.minutes(5)))
struct ProcessFaultTests {
    @Test func killingTheCoordinatorMidRunLosesNothingAndRerunsNoCompletedStep() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 4)
        try deployment.startWorker(concurrency: 4)
        // Steps long enough (10 runs x 8 steps x 2 s over 8 slots: about 20 s) that the kill
        // lands mid-run even when a loaded machine delays this test's polling by seconds (the
        // suite runs in-process LLM stacks beside it; at 1 s steps one full-suite run on
        // 2026-11-30 killed it only after every run had completed).
        let ids = (1...10).map { "kill-coordinator-\($0)" }
        try await deployment.startSteps(ids, StepsInput(steps: 8, milliseconds: 2000))
        #expect(await eventually(20) { deployment.executions.count >= 20 }, "the run got going")
        deployment.coordinator?.kill()
        let killedAt = Date()
        let completedBeforeKill = try deployment.store().runs(status: .completed, limit: 100).count
        try await Task.sleep(for: .milliseconds(500))
        try deployment.startCoordinator()
        for id in ids {
            let run = try await deployment.client.waitForResult(workflowId: id, timeout: 60)
            #expect(run.status == .completed, "\(id): \(run.failure?.description ?? "")")
            #expect(run.result?.json == "28")
        }
        #expect(completedBeforeKill < ids.count, "the kill happened mid-run")
        // No activity whose completion was committed before the kill ran again after it.
        let store = try deployment.store()
        var completedBefore: Set<String> = []
        for id in ids {
            let run = try #require(try store.latestRun(workflowId: id))
            for event in try store.events(runId: run.runId) where event.kind == .activityCompleted && event.time < killedAt {
                completedBefore.insert("\(run.runId)/\(event.ref!)")
            }
        }
        let rerun = deployment.executions.filter {
            $0.time > killedAt && completedBefore.contains("\($0.runId)/\($0.activityId)")
        }
        #expect(!completedBefore.isEmpty)
        #expect(rerun.isEmpty, "re-executed: \(rerun)")
        #expect(Set(deployment.executions.map { "\($0.runId)/\($0.activityId)" }).count == 80)
    }

    @Test func killingAWorkerMidActivityRetriesTheAttemptElsewhere() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let doomed = try deployment.startWorker(concurrency: 1)
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: "kill-worker",
                input: Payload(encoding: StepsInput(steps: 1, milliseconds: 15000, heartbeatTimeoutSeconds: 3), field: "input")))
        // Killed once its start is recorded (the worker reports it with the first heartbeat, or
        // after --start-report-delay), mid-activity.
        let store = try deployment.store()
        #expect(
            try await eventually(30) {
                guard let run = try store.latestRun(workflowId: "kill-worker") else { return false }
                return try store.activities(runId: run.runId).first?.state == .started
            }, "the attempt's start is recorded")
        doomed.kill()
        #expect(!doomed.exists)
        #expect(try deployment.store().runs(status: .completed, limit: 10).isEmpty, "killed mid-activity")
        try deployment.startWorker(concurrency: 1)
        let run = try await deployment.client.waitForResult(workflowId: "kill-worker", timeout: 60)
        #expect(run.status == .completed)
        let attempts = deployment.executions.map(\.attempt)
        #expect(attempts == [1, 2])
        let events = try deployment.store().events(runId: run.runId)
        // The first attempt is lost one of two ways, both retried: its heartbeats stop (its task
        // was acknowledged once its `started` was confirmed), or, killed after the start was
        // recorded but before that acknowledgement left, RabbitMQ delivers the task again to the
        // new worker, which reports it (seen once in a loaded full-suite run).
        let lost = try #require(
            events.first {
                $0.kind == .activityTimedOut || ($0.kind == .activityFailed && $0.failure?.type == "TaskRedelivered")
            })
        if lost.kind == .activityTimedOut { #expect(lost.failure?.timeoutKind == .heartbeat) }
        #expect(lost.failure?.retryState == .willRetry)
        let workers = Set(events.filter { $0.kind == .activityStarted }.compactMap(\.name))
        #expect(workers.count == 2, "the retry ran on the other worker")
    }

    @Test func aTaskThatKillsItsWorkerEveryTimeEndsInTheDeadLetterQueue() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: "poison",
                input: Payload(
                    encoding: StepsInput(steps: 1, milliseconds: 30000, heartbeatTimeoutSeconds: 1, maximumAttempts: 3),
                    field: "input")))
        // Every attempt takes its worker down with it. The workers report each start before they
        // run the activity; the next test holds the report back, as workers do by default.
        for attempt in 1...3 {
            let worker = try deployment.startWorker(concurrency: 1, ["--start-report-delay", "0"])
            #expect(await eventually(30) { deployment.executions.count == attempt }, "attempt \(attempt) started")
            worker.kill()
        }
        let run = try await deployment.client.waitForResult(workflowId: "poison", timeout: 30)
        #expect(run.status == .failed)
        #expect(run.failure?.type == "ActivityFailed", "\(run.failure?.description ?? "")")
        var items: [DeadLetterItem] = []
        #expect(
            try await eventually(10) {
                items = try DeadLetterQueue(url: deployment.url, topology: deployment.topology).list()
                return !items.isEmpty
            })
        let entry = try #require(items.first?.entry)
        #expect(entry.workflowId == "poison")
        #expect(entry.attempts.map(\.attempt) == [1, 2, 3])
        // A worker killed after acknowledging its task is found out by the heartbeat timeout; one
        // killed before (the ack follows the `started` confirm by a fraction of a millisecond)
        // leaves the task to be redelivered, and the next worker reports it instead of running it.
        #expect(
            entry.attempts.allSatisfy { $0.failure.timeoutKind == .heartbeat || $0.failure.type == "TaskRedelivered" },
            "\(entry.attempts.map(\.failure))")
        #expect(entry.failure.retryState == .maximumAttemptsReached)
        #expect(Set(entry.attempts.compactMap(\.worker)).count == 3, "each attempt died on its own worker")
        // Nothing is redelivered: a healthy worker gets no fourth execution.
        try deployment.startWorker()
        try await Task.sleep(for: .seconds(3))
        #expect(deployment.executions.count == 3)
    }

    /// A worker holds back the start of an activity for `--start-report-delay` (250 ms); one
    /// killed sooner leaves a task that comes back unstarted. It goes out once more as the same
    /// attempt, then counts as a failed attempt: a task that kills its worker at once still ends.
    @Test func aTaskThatKillsItsWorkerBeforeItsStartIsReportedStillEnds() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "poison-early",
                input: Payload(
                    encoding: StepsInput(
                        steps: 1, milliseconds: 30000, heartbeatTimeoutSeconds: 5, maximumAttempts: 2, heartbeats: false),
                    field: "input")))
        var kills = 0
        while try deployment.store().latestRun(workflowId: "poison-early")?.status == .running, kills < 10 {
            let before = deployment.executions.count
            let worker = try deployment.startWorker(concurrency: 1, ["--start-report-delay", "10s"])
            _ = await eventually(60) {
                deployment.executions.count > before
                    || (try? deployment.store().latestRun(workflowId: "poison-early")?.status) != .running
            }
            worker.kill()
            kills += 1
        }
        let run = try await deployment.client.waitForResult(workflowId: "poison-early", timeout: 60)
        #expect(run.status == .failed)
        let attempts = deployment.executions.map(\.attempt)
        #expect(attempts == [1, 1, 2, 2], "each attempt ran twice: once unstarted, once more before it counted")
        let failures = try deployment.store().events(runId: run.runId).filter { $0.kind == .activityFailed }
        #expect(failures.map(\.attempt) == [1, 2])
        #expect(failures.allSatisfy { $0.failure?.type == "TaskRedelivered" }, "\(failures.map(\.failure))")
    }

    /// The start held back by `--start-report-delay` goes out once the activity outlives the
    /// delay, without a heartbeat: recorded while the activity still runs, never before the delay.
    @Test func aLongActivityReportsItsStartOnceItOutlivesTheDelay() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 1, ["--start-report-delay", "500ms"])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "late-start",
                input: Payload(
                    encoding: StepsInput(steps: 1, milliseconds: 10000, heartbeatTimeoutSeconds: 30, heartbeats: false),
                    field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "late-start", timeout: 60)
        #expect(run.status == .completed)
        // From the history's times, not by polling while it runs: a loaded suite may poll late.
        let began = try #require(deployment.executions.first).time
        let events = try deployment.store().events(runId: run.runId)
        let started = try #require(events.first { $0.kind == .activityStarted })
        let completed = try #require(events.first { $0.kind == .activityCompleted })
        #expect(started.time.timeIntervalSince(began) >= 0.5, "not before the delay")
        #expect(completed.time.timeIntervalSince(started.time) > 2, "recorded while the activity ran, long before its end")
    }

    /// An activity shorter than `--start-report-delay` has its start recorded with its result;
    /// the result says how long it ran, so the history, the timeline and the metrics still show
    /// when it began instead of a run of no length that waited the whole time.
    @Test func aStartReportedWithTheResultStillShowsWhenTheActivityBegan() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 1, ["--start-report-delay", "5s"])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "short-start",
                input: Payload(encoding: StepsInput(steps: 1, milliseconds: 1500, heartbeats: false), field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "short-start", timeout: 60)
        #expect(run.status == .completed)
        let events = try deployment.store().events(runId: run.runId)
        let started = try #require(events.first { $0.kind == .activityStarted })
        let completed = try #require(events.first { $0.kind == .activityCompleted })
        #expect(completed.time.timeIntervalSince(started.time) < 0.1, "recorded with the result")
        let ran = try #require(ActivityStartedAttributes.of(started)?.ranSeconds)
        #expect(ran >= 1.5 && ran < 5, "\(ran)")
        // The worker's own log of when it began (same machine, same clock): the history's
        // estimate is later only by the result's way to the coordinator (well under the 1.5 s
        // run that an estimate without it would be late by).
        let began = try #require(deployment.executions.first).time
        let estimated = ActivityStartedAttributes.began(started)
        #expect(estimated.timeIntervalSince(began) > -0.01 && estimated.timeIntervalSince(began) < 1, "\(estimated) \(began)")
        let span = try #require(AttemptTimeline.spans(events).first)
        #expect(span.startedAt == estimated)
        #expect(span.outcome == .completed)
    }

    @Test func aWorkerStoppedWithSIGTERMFinishesItsRunningActivityFirst() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let worker = try deployment.startWorker(concurrency: 1)
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: "graceful",
                input: Payload(encoding: StepsInput(steps: 1, milliseconds: 10_000), field: "input")))
        // Ten seconds: the SIGTERM must come while the activity runs, and a loaded suite can
        // hold this test's next poll back for seconds.
        #expect(await eventually(20) { deployment.executions.count == 1 })
        worker.process.terminate()  // SIGTERM only: nothing here kills it
        #expect(await eventually(30) { !worker.process.isRunning })
        let run = try await deployment.client.waitForResult(workflowId: "graceful", timeout: 30)
        #expect(run.status == .completed)
        #expect(deployment.executions.count == 1, "finished by the stopping worker, not run again")
        let log = (try? String(contentsOf: deployment.directory.appendingPathComponent("worker-0.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("waiting for 1 running activity"))
        #expect(log.contains("stopped"), "exited on its own after the activity")
    }

    @Test func theSameJobPublishedTwiceMakesOneRun() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        let request = StartRequest(
            workflowType: "bench-sequential", workflowId: "twice", input: try Payload(encoding: 3, field: "input"),
            requestId: "job-twice")
        try await deployment.client.start(request)
        try await deployment.client.start(request)
        let run = try await deployment.client.waitForResult(workflowId: "twice", timeout: 30)
        #expect(run.status == .completed)
        // A third copy after completion still resolves to that run.
        let again = try await deployment.client.startAndConfirm(request)
        #expect(!again.started && again.runId == run.runId)
        #expect(try deployment.store().runs(status: nil, limit: 10).filter { $0.workflowId == "twice" }.count == 1)
        #expect(deployment.executions.count == 3)
    }

    @Test func undecodableMessagesAreDeadLetteredWithTheirReasonAndNothingStops() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        let connection = try AMQPConnection(url: deployment.url)
        defer { connection.close() }
        try deployment.topology.declare(on: connection)
        try connection.enableConfirms()
        let garbage = Data("{not json".utf8)
        try connection.publish(
            AMQPMessage(
                exchange: deployment.topology.jobsExchange, routingKey: Topology.jobsRoutingKey, body: garbage, type: "start"))
        try connection.publish(
            AMQPMessage(
                exchange: deployment.topology.resultsExchange, routingKey: Topology.resultsRoutingKey, body: garbage,
                type: "result"))
        try connection.publish(
            AMQPMessage(exchange: deployment.topology.tasksExchange, routingKey: "default", body: garbage, type: "task"))
        try connection.publish(
            AMQPMessage(
                exchange: deployment.topology.jobsExchange, routingKey: Topology.jobsRoutingKey, body: Data("{}".utf8),
                type: "launch"))
        try connection.waitForConfirms()
        #expect(try await eventually(20) { try connection.messageCount(queue: deployment.topology.deadLetterQueue) == 4 })
        var reasons: [String: String] = [:]
        let reader = try AMQPConnection(url: deployment.url)  // a plain connection, not in confirm mode
        defer { reader.close() }
        while let message = try reader.get(queue: deployment.topology.deadLetterQueue) {
            reasons[message.headers["keel-origin"] ?? "?", default: ""] += (message.headers["keel-error"] ?? "") + ";"
            #expect(message.body == garbage || message.type == "launch")
            try reader.ack(message.deliveryTag)
        }
        #expect(reasons[deployment.topology.jobsQueue]?.contains("start job body is not valid") == true)
        #expect(reasons[deployment.topology.jobsQueue]?.contains("unknown job type 'launch'") == true)
        #expect(reasons[deployment.topology.resultsQueue]?.contains("result body is not valid") == true)
        #expect(reasons[deployment.topology.queue(forTaskQueue: "default")]?.contains("task body is not valid") == true)
        // Both processes still work.
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-sequential", workflowId: "after-garbage", input: try Payload(encoding: 2, field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "after-garbage", timeout: 30)
        #expect(run.status == .completed)
    }

    /// A step's next task goes out while its commit is written (docs/architecture.md, "The next
    /// task goes out while the step is committed"). Here the commit cannot end: the test holds
    /// the history file's write lock. The task runs meanwhile, and the coordinator is killed
    /// before its commit ends. The next coordinator gets the step's result again from RabbitMQ
    /// and decides the same attempt again; its own copy of the task waits, then would go out to
    /// be claimed, but the first copy reports its start meanwhile. Every step runs exactly once.
    @Test func aCoordinatorKilledBeforeItsCommitEndsRunsNoStepTwice() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 2)
        let id = "killed-mid-commit"
        try await deployment.startSteps([id], StepsInput(steps: 4, milliseconds: 1000))
        #expect(await eventually(30) { !deployment.executions.isEmpty }, "the first step ran")
        // Taken while the first step runs, once the coordinator deleted its task's outbox row
        // (within 50 ms of the confirm): the lock then stops the next commit, the one of the
        // step's result. The coordinator's commits wait for it up to their busy timeout, 10 s.
        try await Task.sleep(for: .milliseconds(300))
        let lock = try await HistoryWriteLock.take(deployment.databasePath)
        let ranBeforeTheLock = deployment.executions.count
        // The next step's task went out although its commit waits: a worker ran it.
        #expect(
            await eventually(8) { deployment.executions.count > ranBeforeTheLock },
            "a task went out while its commit waited for the lock")
        deployment.coordinator?.kill()
        lock.release()
        try deployment.startCoordinator()
        let run = try await deployment.client.waitForResult(workflowId: id, timeout: 60)
        #expect(run.status == .completed, "\(run.failure?.description ?? "")")
        #expect(run.result?.json == "6")
        let runs = Dictionary(grouping: deployment.executions) { "\($0.runId)/\($0.activityId)" }
        #expect(runs.count == 4, "steps run: \(runs.keys.sorted())")
        #expect(runs.values.allSatisfy { $0.count == 1 }, "a step ran twice: \(runs.filter { $0.value.count > 1 })")
    }
}

/// The write lock of a history file, held by a connection of the test's own (`BEGIN
/// IMMEDIATE`): the coordinator's commits wait while it is held.
final class HistoryWriteLock: Sendable {
    private nonisolated(unsafe) let handle: OpaquePointer

    private init(handle: OpaquePointer) { self.handle = handle }

    /// Waits (off Swift's pool) for a commit under way to end, then holds the lock.
    static func take(_ path: String) async throws -> HistoryWriteLock {
        try await offPool {
            var handle: OpaquePointer?
            guard sqlite3_open(path, &handle) == SQLITE_OK, let handle else {
                throw LockFailure(description: "cannot open \(path)")
            }
            sqlite3_busy_timeout(handle, 10_000)
            guard sqlite3_exec(handle, "BEGIN IMMEDIATE TRANSACTION", nil, nil, nil) == SQLITE_OK else {
                let message = String(cString: sqlite3_errmsg(handle))
                sqlite3_close(handle)
                throw LockFailure(description: "cannot take the write lock of \(path): \(message)")
            }
            return HistoryWriteLock(handle: handle)
        }
    }

    struct LockFailure: Error, CustomStringConvertible {
        let description: String
    }

    func release() {
        sqlite3_exec(handle, "ROLLBACK TRANSACTION", nil, nil, nil)
        sqlite3_close(handle)
    }
}
