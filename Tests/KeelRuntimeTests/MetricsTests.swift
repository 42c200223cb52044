import Foundation
import Keel
import KeelTestKit
import Testing

/// `GET /metrics` of a real coordinator and worker after a scripted run.
@Suite("Prometheus metrics", .tags(.integration), .timeLimit(.minutes(2)))
struct MetricsTests {
    static func scrape(_ port: String) async throws -> String {
        let (head, body) = try await CurlHTTPClient().send(
            HTTPRequest(url: "http://127.0.0.1:\(port)/metrics", method: "GET", timeout: 5))
        #expect(head.status == 200)
        #expect(head.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        return String(decoding: body, as: UTF8.self)
    }

    /// The value of the sample whose line starts with `prefix` (name and labels).
    static func value(_ text: String, _ prefix: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test func coordinatorAndWorkerExposeWhatTheRunDid() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        let coordinatorPort = freeLocalPort()
        let workerPort = freeLocalPort()
        try deployment.startCoordinator(["--http-port", coordinatorPort])
        try deployment.startWorker(concurrency: 2, ["--metrics-port", workerPort])
        for id in ["m-1", "m-2", "m-3"] {
            _ = try await deployment.client.startAndConfirm(
                StartRequest(
                    workflowType: "bench-steps", workflowId: id, input: try Payload(encoding: ["steps": 2], field: "input")))
        }
        for id in ["m-1", "m-2", "m-3"] {
            #expect(try await deployment.client.waitForResult(workflowId: id, timeout: 30).status == .completed)
        }
        var text = ""
        #expect(
            try await eventually(10) {
                text = try await Self.scrape(coordinatorPort)
                return Self.value(text, #"keel_workflows_closed_total{workflow_type="bench-steps",status="completed"}"#) == 3
            }, "\(text)")
        #expect(Self.value(text, #"keel_workflows_started_total{workflow_type="bench-steps"}"#) == 3)
        // Each run: started, 2 x (scheduled, started, completed), completed.
        #expect(Self.value(text, #"keel_workflow_history_events_count{workflow_type="bench-steps"}"#) == 3)
        #expect(Self.value(text, #"keel_workflow_history_events_sum{workflow_type="bench-steps"}"#) == 24)
        #expect(Self.value(text, #"keel_activity_attempts_total{activity_type="sleep",task_queue="default"}"#) == 6)
        #expect(Self.value(text, #"keel_activity_schedule_to_start_seconds_count{task_queue="default"}"#) == 6)
        #expect(Self.value(text, #"keel_activity_execution_seconds_count{task_queue="default"}"#) == 6)
        #expect(text.contains("# TYPE keel_activity_execution_seconds histogram"))

        let worker = try await Self.scrape(workerPort)
        #expect(
            Self.value(worker, #"keel_worker_activity_duration_seconds_count{activity_type="sleep",outcome="completed"}"#) == 6,
            "\(worker)")
        #expect(Self.value(worker, #"keel_worker_activities_running{task_queue="default"}"#) == 0)
    }

    @Test func llmCallsAreCountedPerProviderAndModelOnTheWorker() async throws {
        let mock = try await MockProvider.start()
        defer { mock.stop() }
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = [
            "KEEL_LLM_API": "openai", "KEEL_LLM_BASE_URL": mock.baseURL + "/v1", "KEEL_LLM_MODEL": "mock-small",
            "KEEL_LLM_PROVIDER_NAME": "local"
        ]
        let workerPort = freeLocalPort()
        try deployment.startCoordinator()
        try deployment.startWorker(queue: "llm", ["--metrics-port", workerPort])
        for id in ["llm-m-1", "llm-m-2"] {
            let input = JSONValue.object([
                "activityType": .string("llm.complete"), "taskQueue": .string("llm"),
                "input": .object([
                    "messages": .array([.object(["role": .string("user"), "content": .string("Summarise \(id).")])])
                ])
            ])
            _ = try await deployment.client.startAndConfirm(
                StartRequest(
                    workflowType: "call-activity", workflowId: id, input: try Payload(encoding: input, field: "input")))
        }
        for id in ["llm-m-1", "llm-m-2"] {
            #expect(try await deployment.client.waitForResult(workflowId: id, timeout: 30).status == .completed)
        }
        let text = try await Self.scrape(workerPort)
        let labels = #"provider="local",model="mock-small""#
        #expect(Self.value(text, "keel_llm_calls_total{\(labels),outcome=\"ok\"}") == 2, "\(text)")
        let input = try #require(Self.value(text, "keel_llm_provider_tokens_total{\(labels),direction=\"input\"}"))
        let output = try #require(Self.value(text, "keel_llm_provider_tokens_total{\(labels),direction=\"output\"}"))
        let requests = await mock.requests()
        #expect(requests.count == 2)
        #expect(input > 0 && output > 0)
        #expect(Self.value(text, "keel_llm_call_duration_seconds_count{\(labels)}") == 2)
    }

    /// A queue whose only worker runs a long activity in its only slot has no consumer (the worker
    /// stops taking tasks) and a task waiting, but it is busy, not stalled: no flag, no warning.
    @Test func aQueueWhoseWorkersAreAllBusyIsNotReportedStalled() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = ["KEEL_QUEUE_CHECK_SECONDS": "0.2", "KEEL_NO_CONSUMER_SECONDS": "1"]
        let port = freeLocalPort()
        try deployment.startCoordinator(["--http-port", port])
        try deployment.startWorker(concurrency: 1)
        for id in ["busy-a", "busy-b"] {
            _ = try await deployment.client.startAndConfirm(
                StartRequest(
                    workflowType: "bench-steps", workflowId: id,
                    input: Payload(encoding: StepsInput(steps: 1, milliseconds: 6000), field: "input")))
        }
        var text = ""
        #expect(
            try await eventually(15) {
                text = try await Self.scrape(port)
                return Self.value(text, #"keel_queue_consumers{task_queue="default"}"#) == 0
                    && Self.value(text, #"keel_queue_messages{task_queue="default"}"#) == 1
            }, "the worker stopped consuming, one task waits: \(text)")
        // Longer than KEEL_NO_CONSUMER_SECONDS with no consumer and a task waiting.
        try await Task.sleep(for: .seconds(2))
        text = try await Self.scrape(port)
        #expect(Self.value(text, #"keel_queue_consumers{task_queue="default"}"#) == 0, "\(text)")
        #expect(Self.value(text, #"keel_queue_stalled{task_queue="default"}"#) == 0, "\(text)")
        let log = try String(contentsOf: deployment.directory.appendingPathComponent("coordinator.log"), encoding: .utf8)
        #expect(!log.contains("and no consumer for"))
        for id in ["busy-a", "busy-b"] {
            #expect(try await deployment.client.waitForResult(workflowId: id, timeout: 30).status == .completed)
        }
    }

    @Test func aQueueWithNoConsumerAndTheRunWaitingOnItAreReported() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = [
            "KEEL_QUEUE_CHECK_SECONDS": "0.2", "KEEL_NO_CONSUMER_SECONDS": "1", "KEEL_STALL_SECONDS": "1"
        ]
        let port = freeLocalPort()
        try deployment.startCoordinator(["--http-port", port])
        let input = JSONValue.object(["activityType": .string("noop"), "taskQueue": .string("orphan"), "input": .number(7)])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "orphaned", input: try Payload(encoding: input, field: "input")))
        var text = ""
        #expect(
            try await eventually(15) {
                text = try await Self.scrape(port)
                return Self.value(text, #"keel_queue_stalled{task_queue="orphan"}"#) == 1
            }, "\(text)")
        #expect(Self.value(text, #"keel_queue_messages{task_queue="orphan"}"#) == 1)
        #expect(Self.value(text, #"keel_queue_consumers{task_queue="orphan"}"#) == 0)
        #expect(Self.value(text, #"keel_queue_stalled{task_queue="default"}"#) == 0)
        // The run is stalled too, and says on what.
        var stalled = (status: Int32(0), output: "")
        #expect(
            try await eventually(10) {
                stalled = try await deployment.keel(["list", "--status", "stalled"])
                return stalled.output.contains("orphaned")
            }, "\(stalled.output)")
        #expect(stalled.output.contains("activity noop#1 (attempt 1) has waited"))
        #expect(stalled.output.contains("in task queue orphan: no worker took it"))
        #expect(Self.value(try await Self.scrape(port), "keel_workflows_stalled") == 1)
        let log = deployment.directory.appendingPathComponent("coordinator.log")
        #expect(
            try String(contentsOf: log, encoding: .utf8).contains(
                "task queue orphan (\(deployment.topology.queue(forTaskQueue: "orphan"))) has 1 task(s) and no consumer"))

        // A worker for the queue clears the flag and the workflow completes.
        try deployment.startWorker(queue: "orphan")
        #expect(try await deployment.client.waitForResult(workflowId: "orphaned", timeout: 30).status == .completed)
        #expect(
            try await eventually(10) {
                text = try await Self.scrape(port)
                return Self.value(text, #"keel_queue_stalled{task_queue="orphan"}"#) == 0
                    && Self.value(text, #"keel_queue_consumers{task_queue="orphan"}"#) == 1
            }, "\(text)")
        #expect(
            try await eventually(10) {
                try await deployment.keel(["list", "--status", "stalled"]).output.contains("no stalled runs")
            })
        #expect(try String(contentsOf: log, encoding: .utf8).contains("workflow stalled: activity noop#1"))
    }
}
