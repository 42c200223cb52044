import Foundation
import Keel
import KeelTestKit
import Testing

/// One broker user per role (`scripts/rabbitmq users`), each allowed only what its role needs,
/// with real processes: a full run works with them, a worker's user cannot publish jobs, a
/// publisher's cannot take tasks, and only operators may terminate.
@Suite("Broker users per role", .tags(.integration), .timeLimit(.minutes(3)))
struct BrokerUsersTests {
    /// Runs `scripts/rabbitmq users ARGUMENTS` for `deployment`'s namespace on its broker.
    private func users(_ arguments: [String], _ deployment: Deployment) async throws -> (status: Int32, output: String) {
        try await runToEnd(
            URL(fileURLWithPath: "/bin/bash"),
            [ForeignClientTests.root.appendingPathComponent("scripts/rabbitmq").path, "users"] + arguments,
            environment: ["KEEL_NAMESPACE": deployment.topology.namespace, "KEEL_AMQP_PORT": "\(deployment.url.port)"])
    }

    /// Creates the users of `deployment`'s namespace with worker users for `queues` too; returns
    /// their URLs by role.
    private func createUsers(_ queues: [String], _ deployment: Deployment) async throws -> [String: AMQPURL] {
        let created = try await users(queues, deployment)
        try #require(created.status == 0, "\(created.output)")
        return try urls(deployment)
    }

    private func removeUsers(_ deployment: Deployment) {
        let script = ForeignClientTests.root.appendingPathComponent("scripts/rabbitmq").path
        _ = system(
            "KEEL_NAMESPACE=\(deployment.topology.namespace) KEEL_AMQP_PORT=\(deployment.url.port) bash '\(script)' users --remove >/dev/null 2>&1"
        )
    }

    /// The URLs `scripts/rabbitmq users` wrote, by role (`COORDINATOR`, `WORKER_DEFAULT`, …).
    private func urls(_ deployment: Deployment) throws -> [String: AMQPURL] {
        let file = ForeignClientTests.root.appendingPathComponent(
            ".keel/rabbitmq/\(deployment.url.port)/users-\(deployment.topology.namespace).env")
        var urls: [String: AMQPURL] = [:]
        for line in try String(contentsOf: file, encoding: .utf8).split(separator: "\n") where line.hasPrefix("KEEL_AMQP_URL_") {
            let parts = line.dropFirst("KEEL_AMQP_URL_".count).split(separator: "=", maxSplits: 1)
            var url = try AMQPURL(String(parts[1]))
            url.host = deployment.url.host
            urls[String(parts[0])] = url
        }
        return urls
    }

    @Test func eachRoleMayDoOnlyItsPartAndARunCompletesWithThem() async throws {
        let deployment = try Deployment()
        let urls = try await createUsers(["extra"], deployment)
        defer { removeUsers(deployment) }
        let namespace = deployment.topology.namespace
        let (coordinatorUser, workerUser, publisherUser, operatorUser) = (
            try #require(urls["COORDINATOR"]), try #require(urls["WORKER_DEFAULT"]), try #require(urls["PUBLISHER"]),
            try #require(urls["OPERATOR"])
        )
        #expect(urls["WORKER_EXTRA"] != nil, "a worker user for each queue named")

        // A worker started first may not declare the namespace: it says so, and serves once the
        // coordinator has declared it.
        try deployment.startWorker(as: workerUser)
        let workerLog = deployment.directory.appendingPathComponent("worker-0.log")
        #expect(
            await eventually(20) {
                ((try? String(contentsOf: workerLog, encoding: .utf8)) ?? "").contains(
                    "may not declare namespace \(namespace)")
            }, "the worker names the missing permission")
        try deployment.startCoordinator(["--operators", operatorUser.user], as: coordinatorUser)
        // A publisher may not declare the namespace either (its error says so, as the worker's).
        try await deployment.waitUntilCoordinatorServes()

        let publishing = KeelClient(url: publisherUser, topology: deployment.topology)
        defer { publishing.close() }
        _ = try await publishing.startAndConfirm(
            StartRequest(
                workflowType: "bench-sequential", workflowId: "least-privilege", input: Payload(encoding: 3, field: "input")))
        let run = try await publishing.waitForResult(workflowId: "least-privilege", timeout: 60)
        #expect(run.status == .completed)
        #expect(deployment.executions.count == 3)

        // A worker's user cannot publish jobs.
        let asWorker = try AMQPConnection(url: workerUser)
        defer { asWorker.close() }
        try asWorker.enableConfirms()
        #expect(throws: AMQPError.self) {
            try asWorker.publish(
                .wire(
                    .terminate, WorkflowJob(workflowId: "least-privilege", reason: "forged"),
                    exchange: deployment.topology.jobsExchange,
                    routingKey: Topology.jobsRoutingKey))
            try asWorker.waitForConfirms(timeout: 10)
        }
        // A publisher's user cannot take tasks.
        let asPublisher = try AMQPConnection(url: publisherUser)
        defer { asPublisher.close() }
        let refusal = #expect(throws: AMQPError.self) {
            _ = try asPublisher.get(queue: deployment.topology.queue(forTaskQueue: "default"))
        }
        #expect(refusal?.isAccessRefused == true, "\(String(describing: refusal))")

        // Only operators may terminate.
        try await publishing.start(
            StartRequest(
                workflowType: "bench-steps", workflowId: "long",
                input: Payload(encoding: StepsInput(steps: 1, milliseconds: 60_000), field: "input")))
        #expect(await eventually(30) { deployment.executions.count == 4 }, "the long step runs")
        let forbidden = await #expect(throws: (any Error).self) {
            try await publishing.terminate(workflowId: "long", reason: "not mine", confirm: true)
        }
        #expect("\(String(describing: forbidden))".contains("NotAnOperator"), "\(String(describing: forbidden))")
        let operating = KeelClient(url: operatorUser, topology: deployment.topology)
        defer { operating.close() }
        try await operating.terminate(workflowId: "long", reason: "an operator's call", confirm: true)
        #expect(try await publishing.waitForResult(workflowId: "long", timeout: 30).status == .terminated)

        // The dead-letter queue is the operator's to read, not the publisher's.
        let listed = try await runToEnd(
            KeelProcess.binary, ["dlq", "list"], environment: deployment.environment(as: operatorUser))
        #expect(listed.status == 0, "\(listed.output)")
        let peeked = try await runToEnd(
            KeelProcess.binary, ["dlq", "list"], environment: deployment.environment(as: publisherUser))
        #expect(peeked.status != 0)
        #expect(peeked.output.contains("ACCESS_REFUSED"), "\(peeked.output)")
    }

    /// The Python client and worker (clients/python) work with their roles' users too, and a
    /// publisher's terminate from Python gets the operators-only refusal.
    @Test func thePythonClientAndWorkerWorkWithTheirRolesUsers() async throws {
        let deployment = try Deployment()
        let urls = try await createUsers(["python"], deployment)
        defer { removeUsers(deployment) }
        let operatorUser = try #require(urls["OPERATOR"])
        let coordinatorUser: AMQPURL = try #require(urls["COORDINATOR"])
        try deployment.startCoordinator(["--operators", operatorUser.user], as: coordinatorUser)
        try await deployment.waitUntilCoordinatorServes()
        let worker = try KeelProcess(
            ["python3", ForeignClientTests.root.appendingPathComponent("scripts/examples/python_worker.py").path, "python", "2"],
            environment: deployment.environment(as: try #require(urls["WORKER_PYTHON"])),
            log: deployment.directory.appendingPathComponent("python.log"), binary: URL(fileURLWithPath: "/usr/bin/env"))
        defer { Thread.detachNewThread { worker.terminate() } }
        let script = """
            import keel_client
            client = keel_client.Client()
            print("result:", client.start("call-activity", "py-least", {"activityType": "py-upper", "taskQueue": "python", "input": "quiet"}, wait=True, timeout=60))
            try:
                client.terminate("py-least")
                print("terminated")
            except keel_client.KeelError as error:
                print("refused:", error)
            """
        let ran = try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script],
            environment: deployment.environment(as: try #require(urls["PUBLISHER"])).merging([
                "PYTHONPATH": PythonClientTests.package.path
            ]) { $1 })
        #expect(ran.status == 0, "\(ran.output)")
        #expect(ran.output.contains("result: QUIET"), "\(ran.output)")
        #expect(ran.output.contains("refused:") && ran.output.contains("only operators"), "\(ran.output)")
    }
}
