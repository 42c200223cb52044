import Foundation
import Keel
import KeelTestKit
import Testing

/// `clients/python` against the real broker and a real coordinator: runs started and awaited
/// from Python, a Python activity heartbeating through a worker killed mid-run, the dead-letter
/// queue listed and drained from Python, and the package installed with pip.
@Suite("The Python client", .tags(.integration), .timeLimit(.minutes(4)))
struct PythonClientTests {
    static let package = ForeignClientTests.root.appendingPathComponent("clients/python")

    static func python(
        _ arguments: [String], _ deployment: Deployment, path: String = package.path
    ) async throws -> (status: Int32, output: String) {
        try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + arguments,
            environment: deployment.environment.merging(["PYTHONPATH": path]) { $1 }, directory: ForeignClientTests.root)
    }

    static func startPythonWorker(_ deployment: Deployment, log: String) throws -> KeelProcess {
        try KeelProcess(
            ["python3", ForeignClientTests.root.appendingPathComponent("scripts/examples/python_worker.py").path, "python", "2"],
            environment: deployment.environment, log: deployment.directory.appendingPathComponent(log),
            binary: URL(fileURLWithPath: "/usr/bin/env"))
    }

    @Test func runsAreStartedAndAwaitedWithTypedRefusals() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        let worker = try Self.startPythonWorker(deployment, log: "python.log")
        defer { Thread.detachNewThread { worker.terminate() } }
        let scenario = Self.package.appendingPathComponent("tests/scenarios.py").path
        let ran = try await Self.python([scenario, "start-and-wait"], deployment)
        #expect(ran.status == 0, "\(ran.output)")
        #expect(ran.output.contains("ok: WorkflowFailed carries the failure"), "\(ran.output)")
    }

    @Test func aPythonActivityHeartbeatsThroughAWorkerKilledMidRun() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let scenario = Self.package.appendingPathComponent("tests/scenarios.py").path
        // The activity waits after step 3 until this file exists: the worker is killed there.
        let gate = deployment.directory.appendingPathComponent("gate").path
        func worker(_ log: String) throws -> KeelProcess {
            try KeelProcess(
                ["python3", scenario, "worker", gate],
                environment: deployment.environment.merging(["PYTHONPATH": Self.package.path]) { $1 },
                log: deployment.directory.appendingPathComponent(log), binary: URL(fileURLWithPath: "/usr/bin/env"))
        }
        let first = try worker("python-1.log")
        let started = try await Self.python([scenario, "start", "py-count", gate], deployment)
        #expect(started.status == 0, "\(started.output)")
        let store = try deployment.store()
        func lastStep() throws -> Int {
            guard let run = try store.latestRun(workflowId: "py-count"),
                let details = try store.activities(runId: run.runId).first?.heartbeatDetails,
                let step = try? details.decode([String: Int].self)["step"]
            else { return 0 }
            return step
        }
        #expect(try await eventually(60) { try lastStep() == 3 }, "heartbeats with details arrive")
        try await offPool { first.kill() }
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        let second = try worker("python-2.log")
        defer { Thread.detachNewThread { second.terminate() } }
        let waited = try await Self.python([scenario, "wait", "py-count"], deployment)
        #expect(waited.status == 0, "\(waited.output)")
        let result = try JSONDecoder().decode(
            [String: Int].self, from: Data((waited.output.split(separator: "\n").last ?? "").utf8))
        // The next attempt began where the killed one's last heartbeat left it.
        #expect(result == ["counted": 20, "resumedFrom": 3], "\(waited.output)")
        let run = try #require(try store.latestRun(workflowId: "py-count"))
        let events = try store.events(runId: run.runId)
        #expect(events.filter { $0.kind == .activityStarted }.count == 2, "one attempt lost with the worker, one resumed")
        #expect(
            events.first { $0.kind == .activityTimedOut }?.failure?.message.contains("heartbeat") == true,
            "the lost attempt ended by its heartbeat timeout")
    }

    @Test func theDeadLetterQueueIsListedAndDrainedFromPython() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let worker = try Self.startPythonWorker(deployment, log: "python.log")
        defer { Thread.detachNewThread { worker.terminate() } }
        let failing = JSONValue.object([
            "activityType": .string("py-fail"), "taskQueue": .string("python"),
            "input": .object(["type": .string("Bad"), "message": .string("no"), "nonRetryable": .bool(true)])
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "call-activity", workflowId: "py-dead", input: Payload(encoding: failing, field: "input")))
        #expect(try await deployment.client.waitForResult(workflowId: "py-dead", timeout: 60).status == .failed)
        let inspector = try AMQPConnection(url: deployment.url)
        defer { inspector.close() }
        #expect(try await eventually(20) { try inspector.inspect(queue: deployment.topology.deadLetterQueue).messages >= 1 })

        let file = deployment.directory.appendingPathComponent("drained.jsonl")
        let scenario = Self.package.appendingPathComponent("tests/scenarios.py").path
        let drained = try await Self.python([scenario, "dead-letters", file.path], deployment)
        #expect(drained.status == 0, "\(drained.output)")
        #expect(try inspector.inspect(queue: deployment.topology.deadLetterQueue).messages == 0)
        // What Python wrote is what `keel dlq` reads: the same item shape.
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
        let item = try JSONDecoder().decode(JSONValue.self, from: Data(lines[0].utf8))
        guard case .object(let fields) = item else {
            Issue.record("not an object: \(item)")
            return
        }
        #expect(fields["kind"] == .string("activity"))
        #expect(fields["reason"] == .string("Bad: no (nonRetryableFailure)"), "\(item)")
    }

    @Test func aParkedActivityIsRedrivenAndDiscardedFromPython() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let worker = try Self.startPythonWorker(deployment, log: "python.log")
        defer { Thread.detachNewThread { worker.terminate() } }
        let parking = JSONValue.object([
            "activityType": .string("py-fail"), "taskQueue": .string("python"), "park": .bool(true),
            "maximumAttempts": .integer(1),
            "input": .object(["type": .string("Flaky"), "message": .string("try later")])
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "call-activity", workflowId: "py-park", input: Payload(encoding: parking, field: "input")))
        let scenario = Self.package.appendingPathComponent("tests/scenarios.py").path
        let ran = try await Self.python([scenario, "redrive-and-discard", "py-park"], deployment)
        #expect(ran.status == 0, "\(ran.output)")
        let run = try #require(try deployment.store().latestRun(workflowId: "py-park"))
        let events = try deployment.store().events(runId: run.runId)
        #expect(events.filter { $0.kind == .activityParked }.count == 2, "parked, redriven, parked again")
        #expect(run.status == .failed)
    }

    /// The Python worker takes a task only when it has a slot for it: it reports a task's start
    /// only when the activity begins. It used to take every queued task at once and report each
    /// started while it waited in the thread pool, so tasks behind the first ones timed out
    /// (start-to-close) without having run.
    @Test func thePythonWorkerReportsAStartOnlyWhenTheActivityBegins() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let worker = try Self.startPythonWorker(deployment, log: "python.log")
        defer { Thread.detachNewThread { worker.terminate() } }
        // Two slots, four 2 s activities, each allowed 3 s from its start.
        let ids = (1...4).map { "py-queued-\($0)" }
        let counting = JSONValue.object([
            "activityType": .string("py-count"), "taskQueue": .string("python"), "startToCloseSeconds": .integer(3),
            "maximumAttempts": .integer(1), "input": .object(["to": .integer(4), "delay": .number(0.5)])
        ])
        for id in ids {
            _ = try await deployment.client.startAndConfirm(
                StartRequest(workflowType: "call-activity", workflowId: id, input: Payload(encoding: counting, field: "input")))
        }
        for id in ids {
            let run = try await deployment.client.waitForResult(workflowId: id, timeout: 60)
            #expect(run.status == .completed, "\(id): \(run.failure?.description ?? "")")
        }
        // No more than two ran at once: the last two started once the first two ended.
        var starts: [Date] = []
        for id in ids {
            let run = try #require(try deployment.store().latestRun(workflowId: id))
            starts += try deployment.store().events(runId: run.runId).filter { $0.kind == .activityStarted }.map(\.time)
        }
        starts.sort()
        #expect(starts.count == 4)
        #expect(starts[2].timeIntervalSince(starts[0]) > 1.5, "starts: \(starts.map { $0.timeIntervalSince(starts[0]) })")
    }

    @Test func thePackageInstallsWithPip() async throws {
        let deployment = try Deployment()
        let target = deployment.directory.appendingPathComponent("site")
        let installed = try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"),
            ["python3", "-m", "pip", "install", "--quiet", "--target", target.path, Self.package.path], environment: [:])
        #expect(installed.status == 0, "\(installed.output)")
        let imported = try await Self.python(
            ["-c", "import keel_client, os; print(os.path.dirname(keel_client.__file__))"], deployment, path: target.path)
        #expect(imported.status == 0, "\(imported.output)")
        #expect(imported.output.contains(target.path), "\(imported.output)")
    }
}
