import Foundation
import Keel
import KeelTestKit
import Testing

/// A task RabbitMQ delivers again (its first delivery was never acknowledged) is not run by the
/// worker that gets it: the coordinator decides, from whether it saw the attempt start.
/// A raw connection plays the worker that vanishes: it takes the task with `basic.get` and closes
/// without acknowledging it. A task the coordinator publishes again from its outbox is claimed
/// before it runs, so its two copies do not both run.
@Suite("Redelivered and republished tasks", .tags(.integration), .timeLimit(.minutes(3)))
struct RedeliveryTests {
    /// A coordinator with no worker, and a one-step run of `workflowId` started on it.
    private func deployment(running workflowId: String, milliseconds: Int = 0) async throws -> Deployment {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try await startOneStep(deployment, workflowId, milliseconds: milliseconds)
        return deployment
    }

    /// Starts a one-step run of `workflowId` on `deployment`'s coordinator.
    private func startOneStep(
        _ deployment: Deployment, _ workflowId: String, milliseconds: Int, heartbeats: Bool? = nil
    ) async throws {
        try await deployment.client.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: workflowId,
                // A long heartbeat timeout: on a loaded machine the next worker may take seconds to
                // start, and the attempt must end by its redelivery, not by a timeout.
                input: Payload(
                    encoding: StepsInput(
                        steps: 1, milliseconds: milliseconds, heartbeatTimeoutSeconds: 60, heartbeats: heartbeats),
                    field: "input")))
    }

    /// Takes the first task of `default` without acknowledging it; the caller closes the
    /// connection to hand it back.
    private func takeTask(_ deployment: Deployment) async throws -> (AMQPConnection, ActivityTask) {
        let taker = try AMQPConnection(url: deployment.url)
        let queue = deployment.topology.queue(forTaskQueue: "default")
        var taken: AMQPDelivery?
        #expect(
            try await eventually(20) {
                taken = try await offPool { try taker.get(queue: queue) }
                return taken != nil
            }, "the coordinator published the task")
        let delivery = try #require(taken)
        #expect(!delivery.redelivered)
        return (taker, try Wire.decode(ActivityTask.self, from: delivery.body, what: "task"))
    }

    private func workerLog(_ deployment: Deployment) -> String {
        (try? String(contentsOf: deployment.directory.appendingPathComponent("worker-0.log"), encoding: .utf8)) ?? ""
    }

    @Test func aTaskRedeliveredBeforeItsAttemptStartedGoesOutAgainAsTheSameAttempt() async throws {
        let deployment = try await deployment(running: "never-started")
        let (taker, task) = try await takeTask(deployment)
        #expect(task.attempt == 1)
        taker.close()  // unacknowledged: back to the queue, flagged redelivered
        let metricsPort = freeLocalPort()
        try deployment.startWorker(concurrency: 1, ["--metrics-port", metricsPort])
        let run = try await deployment.client.waitForResult(workflowId: "never-started", timeout: 30)
        #expect(run.status == .completed)
        #expect(deployment.executions.map(\.attempt) == [1], "ran once, as attempt 1")
        let events = try deployment.store().events(runId: run.runId)
        #expect(!events.contains { $0.kind == .activityFailed }, "nothing ran, so no attempt was lost")
        #expect(events.filter { $0.kind == .activityStarted }.map(\.attempt) == [1])
        #expect(
            workerLog(deployment).contains(
                "task \(task.attemptKey) was delivered again; reported to the coordinator instead of run"))
        let metrics = try await MetricsTests.scrape(metricsPort)
        #expect(MetricsTests.value(metrics, #"keel_worker_tasks_not_run_total{task_queue="default",reason="redelivered"}"#) == 1)
    }

    @Test func aTaskRedeliveredAfterItsAttemptStartedCountsAsAFailedAttempt() async throws {
        let deployment = try await deployment(running: "started-then-vanished")
        let (taker, task) = try await takeTask(deployment)
        // The vanishing worker reports the start, as a worker does before it runs the activity.
        let reporter = try AMQPConnection(url: deployment.url)
        defer { reporter.close() }
        try reporter.enableConfirms()
        try reporter.publish(
            .wire(
                .started,
                ActivityStarted(
                    runId: task.runId, activityId: task.activityId, attempt: 1, worker: "vanishing-worker", time: Date()),
                exchange: deployment.topology.resultsExchange, routingKey: Topology.resultsRoutingKey))
        try reporter.waitForConfirms()
        let store = try deployment.store()
        #expect(
            try await eventually(20) {
                try store.events(runId: task.runId).contains { $0.kind == .activityStarted }
            }, "the coordinator recorded the start")
        taker.close()
        try deployment.startWorker(concurrency: 1)
        let run = try await deployment.client.waitForResult(workflowId: "started-then-vanished", timeout: 30)
        #expect(run.status == .completed)
        #expect(deployment.executions.map(\.attempt) == [2], "the redelivered attempt 1 was not run again; attempt 2 was")
        let events = try store.events(runId: run.runId)
        let lost = try #require(events.first { $0.kind == .activityFailed })
        #expect(lost.attempt == 1)
        #expect(lost.failure?.type == "TaskRedelivered")
        #expect(lost.failure?.retryState == .willRetry)
        let starts = events.filter { $0.kind == .activityStarted }
        #expect(starts.map(\.attempt) == [1, 2])
        #expect(starts.first?.name == "vanishing-worker")
        #expect(workerLog(deployment).contains("was delivered again"))
    }

    /// A worker may run a short activity before it reports its start (`--start-report-delay`), so
    /// a task that comes back unstarted may have run: the second time, its attempt counts as
    /// failed, and a task that kills every worker before its start is reported still ends.
    @Test func aTaskRedeliveredTwiceBeforeAnyStartCountsAsAFailedAttempt() async throws {
        let deployment = try await deployment(running: "twice-unstarted")
        let reporter = try AMQPConnection(url: deployment.url)
        defer { reporter.close() }
        try reporter.enableConfirms()
        let queue = deployment.topology.queue(forTaskQueue: "default")
        /// Takes the task back after a vanished worker, reports the redelivery as a worker does,
        /// and acknowledges it.
        func vanishAndReport() async throws -> ActivityTask {
            let (taker, task) = try await takeTask(deployment)
            taker.close()
            let again = try AMQPConnection(url: deployment.url)
            defer { again.close() }
            let delivery = try #require(try await offPool { try again.get(queue: queue) })
            #expect(delivery.redelivered)
            try reporter.publish(
                .wire(
                    .redelivered,
                    ActivityRedelivered(
                        runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: "next-worker"),
                    exchange: deployment.topology.resultsExchange, routingKey: Topology.resultsRoutingKey))
            try reporter.waitForConfirms()
            try again.ack(delivery.deliveryTag)
            return task
        }
        let first = try await vanishAndReport()
        #expect(first.attempt == 1)
        let second = try await vanishAndReport()
        #expect(second.attempt == 1, "the first unstarted redelivery sends the same attempt again")
        let store = try deployment.store()
        #expect(
            try await eventually(20) {
                try store.events(runId: first.runId).contains { $0.kind == .activityFailed }
            }, "the second unstarted redelivery counted as a failed attempt")
        try deployment.startWorker(concurrency: 1)
        let run = try await deployment.client.waitForResult(workflowId: "twice-unstarted", timeout: 30)
        #expect(run.status == .completed)
        #expect(deployment.executions.map(\.attempt) == [2])
        let events = try store.events(runId: run.runId)
        let lost = try #require(events.first { $0.kind == .activityFailed })
        #expect(lost.attempt == 1)
        #expect(lost.failure?.type == "TaskRedelivered")
        #expect(lost.failure?.message.contains("before any worker reported its start") == true)
        #expect(events.filter { $0.kind == .activityStarted }.map(\.attempt) == [2], "no start was ever reported for attempt 1")
    }

    @Test func aTaskRepublishedAfterACoordinatorRestartRunsOnceThoughBothCopiesAreQueued() async throws {
        let deployment = try await deployment(running: "republished")
        let activity = try await deployment.republishQueuedTask(of: "republished", taskQueue: "default")
        let metricsPort = freeLocalPort()
        try deployment.startWorker(concurrency: 1, ["--metrics-port", metricsPort])
        let result = try await deployment.client.waitForResult(workflowId: "republished", timeout: 30)
        #expect(result.status == .completed)
        #expect(
            await eventually(10) {
                workerLog(deployment).contains(
                    "task \(activity.runId)/\(activity.activityId)/1 not run: the coordinator refused its claim"
                )
            }, "\(workerLog(deployment))")
        #expect(deployment.executions.count == 1, "the first copy ran, the republished one did not")
        let metrics = try await MetricsTests.scrape(metricsPort)
        #expect(
            MetricsTests.value(metrics, #"keel_worker_tasks_not_run_total{task_queue="default",reason="claimed_elsewhere"}"#) == 1
        )
    }

    /// Both copies queued, and a worker with room for both, started after the restart: it asks
    /// the coordinator's epoch as it starts, so it claims the first copy too, which carries the
    /// old coordinator's epoch; only one claim is granted. Before, the first copy ran
    /// unclaimed, its start held back while it ran, and the second copy's claim was granted
    /// meanwhile: the step ran twice.
    @Test func bothQueuedCopiesOfATaskRunOnceOnAWorkerWithRoomForBoth() async throws {
        let deployment = try await deployment(running: "republished-wide", milliseconds: 1500)
        let activity = try await deployment.republishQueuedTask(of: "republished-wide", taskQueue: "default")
        try deployment.startWorker(concurrency: 4)
        let result = try await deployment.client.waitForResult(workflowId: "republished-wide", timeout: 30)
        #expect(result.status == .completed)
        #expect(
            await eventually(10) {
                workerLog(deployment).contains(
                    "task \(activity.runId)/\(activity.activityId)/1 not run: the coordinator refused its claim")
            }, "\(workerLog(deployment))")
        #expect(deployment.executions.count == 1, "one copy ran")
    }

    /// A worker that heard the old coordinator's epoch holds the first copy of a task, queued
    /// behind the activity it runs, when a new coordinator takes over and publishes a second
    /// copy, which another worker claims and runs. The new coordinator told every worker its
    /// epoch on `keel.control` as it started: the first worker claims its copy once its slot is
    /// free, is refused, and drops it. Before, that copy looked current to it and ran again.
    @Test func aFirstCopyHeldByALiveWorkerIsClaimedAfterANewCoordinatorSaidItsEpoch() async throws {
        let deployment = try Deployment()
        // Its busy activity reports no start (nor frees its task) for 30 s: the worker's window
        // keeps room for the next task, which waits there for the slot. Started before the
        // coordinator, it hears the coordinator's epoch, and runs busy without claiming it.
        try deployment.startWorker(concurrency: 1, ["--start-report-delay", "30s"])
        #expect(await eventually(20) { workerLog(deployment).contains("serving") }, "the worker consumes")
        try deployment.startCoordinator()
        // No heartbeats: a heartbeat reports the start.
        try await startOneStep(deployment, "busy", milliseconds: 8000, heartbeats: false)
        #expect(await eventually(20) { deployment.executions.contains { $0.workflowId == "busy" } }, "the worker runs busy")
        try await startOneStep(deployment, "held", milliseconds: 0, heartbeats: false)
        let inspector = try AMQPConnection(url: deployment.url)
        defer { inspector.close() }
        let queue = deployment.topology.queue(forTaskQueue: "default")
        let store = try deployment.store()
        #expect(
            try await eventually(20) {
                try store.latestRun(workflowId: "held") != nil && inspector.inspect(queue: queue).messages == 0
            }, "held's first copy waits at the busy worker, not in the queue")
        let activity = try await deployment.restartCoordinator(withTaskInOutboxOf: "held", taskQueue: "default")
        try deployment.startWorker(concurrency: 1)
        let result = try await deployment.client.waitForResult(workflowId: "held", timeout: 30)
        #expect(result.status == .completed)
        #expect(try await deployment.client.waitForResult(workflowId: "busy", timeout: 30).status == .completed)
        #expect(
            await eventually(10) {
                workerLog(deployment).contains(
                    "task \(activity.runId)/\(activity.activityId)/1 not run: the coordinator refused its claim")
            }, "\(workerLog(deployment))")
        #expect(deployment.executions.filter { $0.workflowId == "held" }.count == 1, "one copy ran")
    }
}
