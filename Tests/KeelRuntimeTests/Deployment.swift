import Foundation
import Keel
import KeelTestKit
import Testing

/// Real `keel coordinator` and `keel worker` processes against the broker at `KEEL_AMQP_URL`
/// (or the local one), with their own SQLite file and execution log.
final class Deployment: @unchecked Sendable {
    let directory = makeTemporaryDirectory("keel-deploy")
    let url: AMQPURL
    let topology: Topology
    let client: KeelClient
    private(set) var coordinator: KeelProcess?
    private(set) var workers: [KeelProcess] = []
    private var retired: [KeelProcess] = []
    /// Task queues beyond the standard ones, deleted with the namespace's other queues at the end.
    var taskQueues: Set<String> = ["python", "orphan"]

    var databasePath: String { directory.appendingPathComponent("keel.sqlite").path }
    var executionLogPath: String { directory.appendingPathComponent("executions.log").path }

    init(url: AMQPURL? = nil, queueType: Topology.QueueType = .classic) throws {
        self.url = try url ?? AMQPURL.fromEnvironment()
        topology = Topology(namespace: Topology.forTest().namespace, queueType: queueType)
        client = KeelClient(url: self.url, topology: topology)
    }

    /// Added to the environment of the processes started after it is set.
    var extraEnvironment: [String: String] = [:]

    var environment: [String: String] { environment(as: url) }

    /// The processes' environment, connecting as the user of `url`.
    func environment(as url: AMQPURL) -> [String: String] {
        extraEnvironment.merging([
            "KEEL_DB": databasePath, "KEEL_AMQP_URL": "amqp://\(url.user):\(url.password)@\(url.host):\(url.port)",
            "KEEL_EXECUTION_LOG": executionLogPath, "KEEL_NAMESPACE": topology.namespace,
            "KEEL_QUEUE_TYPE": topology.queueType.rawValue
        ]) { $1 }
    }

    /// Starts the coordinator (connecting as the user of `user`, default the deployment's URL).
    func startCoordinator(_ arguments: [String] = [], as user: AMQPURL? = nil) throws {
        // One still running (a test that restarts a coordinator it expected to have died) is
        // stopped with the others, not leaked.
        if let previous = coordinator, previous.exists { retired.append(previous) }
        coordinator = try KeelProcess(
            ["coordinator"] + arguments, environment: environment(as: user ?? url),
            log: directory.appendingPathComponent("coordinator.log"))
    }

    /// Waits until the coordinator consumes its jobs queue, so the topology it declares exists:
    /// a publisher that does not declare it (`amqp-publish`) gets NOT_FOUND before then.
    func waitUntilCoordinatorServes(timeout: Double = 30) async throws {
        let (url, queue) = (self.url, topology.jobsQueue)
        let serving = await eventually(timeout) {
            // A passive declare of a missing queue closes the channel: a new connection each time.
            guard let probe = try? AMQPConnection(url: url) else { return false }
            defer { probe.close() }
            return ((try? probe.inspect(queue: queue).consumers) ?? 0) > 0
        }
        try #require(serving, "the coordinator consumes \(queue) within \(timeout) s")
    }

    @discardableResult
    func startWorker(
        queue: String = "default", concurrency: Int = 4, _ arguments: [String] = [], as user: AMQPURL? = nil
    ) throws -> KeelProcess {
        taskQueues.insert(queue)
        let worker = try KeelProcess(
            ["worker", "--queue", queue, "--concurrency", "\(concurrency)"] + arguments,
            environment: environment(as: user ?? url),
            log: directory.appendingPathComponent("worker-\(workers.count).log"))
        workers.append(worker)
        return worker
    }

    /// Runs `keel ARGUMENTS` against this deployment to the end.
    func keel(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let environment = self.environment
        return try await runToEnd(KeelProcess.binary, arguments, environment: environment)
    }

    func store() throws -> SQLiteHistoryStore { try SQLiteHistoryStore(path: databasePath) }

    /// Starts a `bench-steps` run for each of `ids`, each id its request id too, without
    /// waiting for the coordinator to take them.
    func startSteps(_ ids: [String], _ steps: StepsInput) async throws {
        let input = try Payload(encoding: steps, field: "input")
        for id in ids {
            try await client.start(StartRequest(workflowType: "bench-steps", workflowId: id, input: input, requestId: id))
        }
    }

    var executions: [ExecutionLog.Entry] { ExecutionLog.read(executionLogPath) }

    /// SIGTERM to every process; the waiting (up to 10 s each), the client's close and the queue
    /// cleanup happen on a thread of their own: tests call this from `defer` on the two-thread
    /// cooperative pool, and blocking it there stalled every other test in the suite.
    func stopAll() {
        let processes = [coordinator].compactMap { $0 } + retired + workers
        for process in processes where process.process.isRunning {
            kill(process.process.processIdentifier, SIGTERM)
        }
        let (client, topology, url, taskQueues) = (self.client, self.topology, self.url, Array(self.taskQueues))
        BackgroundCleanups.run {
            for process in processes { process.terminate() }
            client.close()
            topology.remove(from: url, taskQueues: taskQueues)
        }
    }

    deinit {
        stopAll()
        // Kept on request, to read a failed test's logs (the README: `scripts/test`).
        if ProcessInfo.processInfo.environment["KEEL_KEEP_TEST_DIRECTORIES"] == nil {
            try? FileManager.default.removeItem(at: directory)
        }
    }
}

extension Deployment {
    /// With the task of `workflowId`'s only activity queued on `taskQueue` and no worker: stops
    /// the coordinator, puts the task's outbox row back (as after a crash between its publish and
    /// the row's deletion) and starts the coordinator again, which publishes a second copy,
    /// marked republished. Returns the activity.
    func republishQueuedTask(of workflowId: String, taskQueue: String) async throws -> ActivityRecord {
        let queue = topology.queue(forTaskQueue: taskQueue)
        let inspector = try AMQPConnection(url: url)
        defer { inspector.close() }
        #expect(try await eventually(20) { try inspector.inspect(queue: queue).messages == 1 }, "the first copy is queued")
        let activity = try await restartCoordinator(withTaskInOutboxOf: workflowId, taskQueue: taskQueue)
        #expect(
            try await eventually(20) { try inspector.inspect(queue: queue).messages == 2 },
            "the restarted coordinator republished it")
        return activity
    }

    /// Stops the coordinator, puts the task of `workflowId`'s only activity back in the outbox (as
    /// after a crash between its publish and the row's deletion) and starts the coordinator
    /// again, which publishes a second copy, marked republished, once its hold is over
    /// (``Coordinator/redeliveredTaskDelay``). Returns the activity.
    func restartCoordinator(withTaskInOutboxOf workflowId: String, taskQueue: String) async throws -> ActivityRecord {
        let first = try #require(coordinator)
        try await offPool { first.terminate() }
        let store = try store()
        let run = try #require(try store.latestRun(workflowId: workflowId))
        let activity = try #require(try store.activities(runId: run.runId).first)
        var batch = StoreBatch()
        batch.outbox = [
            ActivityTask(
                workflowId: run.workflowId, runId: run.runId, workflowType: run.workflowType, activityId: activity.activityId,
                activityType: activity.activityType, attempt: activity.attempt, input: activity.input, taskQueue: taskQueue,
                scheduledAt: activity.scheduledAt, attemptScheduledAt: activity.attemptScheduledAt, startToCloseTimeout: nil,
                scheduleToCloseTimeout: nil, heartbeatTimeout: nil, heartbeatDetails: nil)
        ]
        try store.commit(batch)
        try startCoordinator()
        return activity
    }
}

/// Runs `scripts/rabbitmq COMMAND` for a broker of a test's own on `port`. Through `system()`:
/// Foundation's `Process.waitUntilExit` does not return once the script has left a broker daemon
/// behind. A failed start throws with what the script printed (its last lines name the node's log).
func localBroker(_ command: String, port: String, environment: String = "") throws {
    let script = ForeignClientTests.root.appendingPathComponent("scripts/rabbitmq").path
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("keel-rabbitmq-\(port)-\(UUID()).log")
    defer { try? FileManager.default.removeItem(at: output) }
    let status = system("\(environment) KEEL_AMQP_PORT=\(port) '\(script)' \(command) </dev/null >'\(output.path)' 2>&1")
    if command == "start" && status != 0 {
        let printed = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        throw WireError(message: "scripts/rabbitmq start failed (\(status)): \(printed.suffix(3_000))")
    }
}

/// ``localBroker(_:port:environment:)`` off the cooperative pool.
func startLocalBroker(port: String, environment: String = "") async throws {
    try await offPool { try localBroker("start", port: port, environment: environment) }
}
