import Foundation
import Keel
import KeelTestKit
import Testing

/// The wire protocol from outside Swift: jobs from bash (amqp-publish), a worker in Python.
@Suite("Jobs and workers in other languages", .tags(.integration), .timeLimit(.minutes(3)))
struct ForeignClientTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func run(_ arguments: [String], environment: [String: String]) async throws -> (status: Int32, output: String) {
        try await runToEnd(URL(fileURLWithPath: "/usr/bin/env"), arguments, environment: environment, directory: root)
    }

    @Test func publishJobStartsAWorkflowAndAJobPublishedTwiceMakesOneRun() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        try await deployment.waitUntilCoordinatorServes()
        for _ in 0..<2 {
            let published = try await Self.run(
                ["scripts/publish-job", "bench-sequential", "from-bash", "4"], environment: deployment.environment)
            #expect(published.status == 0, "\(published.output)")
        }
        let run = try await deployment.client.waitForResult(workflowId: "from-bash", timeout: 30)
        #expect(run.status == .completed)
        #expect(run.result?.json == "6")
        #expect(try deployment.store().runs(status: nil, limit: 10).filter { $0.workflowId == "from-bash" }.count == 1)
        let bad = try await Self.run(
            ["scripts/publish-job", "bench-sequential", "bad", "{oops"], environment: deployment.environment)
        #expect(bad.status == 2)
        #expect(bad.output.contains("input is not valid JSON"))
    }

    @Test func aPythonWorkerServesAQueue() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let python = try KeelProcess(
            ["python3", Self.root.appendingPathComponent("scripts/examples/python_worker.py").path, "python"],
            environment: deployment.environment, log: deployment.directory.appendingPathComponent("python.log"),
            binary: URL(fileURLWithPath: "/usr/bin/env"))
        let log = deployment.directory.appendingPathComponent("python.log")
        defer { python.terminate() }

        let upper = JSONValue.object([
            "activityType": .string("py-upper"), "taskQueue": .string("python"), "input": .string("keel")
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "call-activity", workflowId: "py-1", input: Payload(encoding: upper, field: "input")))
        let done = try await deployment.client.waitForResult(workflowId: "py-1", timeout: 60)
        #expect(done.status == .completed, "\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        #expect(done.result?.json == "\"KEEL\"")

        let failing = JSONValue.object([
            "activityType": .string("py-fail"), "taskQueue": .string("python"),
            "input": .object([
                "type": .string("LLMBadRequest"), "message": .string("400 from python"), "nonRetryable": .bool(true)
            ])
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "call-activity", workflowId: "py-2", input: Payload(encoding: failing, field: "input")))
        let failed = try await deployment.client.waitForResult(workflowId: "py-2", timeout: 60)
        #expect(failed.status == .failed)
        #expect(failed.failure?.message.contains("LLMBadRequest: 400 from python") == true)
        let started = try deployment.store().events(runId: failed.runId).filter { $0.kind == .activityStarted }
        #expect(started.count == 1, "non-retryable: one attempt")
        #expect(started.first?.name?.hasPrefix("python:") == true)
    }

    @Test func aPythonWorkerClaimsARepublishedTaskAndRunsOneCopy() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        let upper = JSONValue.object([
            "activityType": .string("py-upper"), "taskQueue": .string("python"), "input": .string("once")
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "py-republished", input: Payload(encoding: upper, field: "input")))
        let activity = try await deployment.republishQueuedTask(of: "py-republished", taskQueue: "python")
        let log = deployment.directory.appendingPathComponent("python.log")
        let python = try KeelProcess(
            ["python3", Self.root.appendingPathComponent("scripts/examples/python_worker.py").path, "python"],
            environment: deployment.environment, log: log, binary: URL(fileURLWithPath: "/usr/bin/env"))
        defer { python.terminate() }
        let done = try await deployment.client.waitForResult(workflowId: "py-republished", timeout: 60)
        #expect(done.result?.json == "\"ONCE\"")
        let key = "\(activity.runId)/\(activity.activityId)/1"
        var output = ""
        #expect(
            await eventually(20) {
                output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                return output.contains("dropped a republished copy of \(key)")
            }, "\(output)")
        #expect(output.components(separatedBy: "ran py-upper for \(key)").count - 1 == 1, "one copy ran: \(output)")
    }
}
