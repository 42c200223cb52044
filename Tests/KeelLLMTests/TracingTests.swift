import Foundation
import InMemoryTracing
import Keel
import KeelMockLLM
import KeelTestKit
import Testing
import Tracing

/// One trace per run, joined across the coordinator and the worker through the AMQP headers of
/// each task, with an in-memory tracer in both.
@Suite("Traces", .tags(.integration), .timeLimit(.minutes(2)))
struct TracingTests {
    @Test func aRunsAttemptsAreSpansOfItsTraceWithTheirLLMDetails() async throws {
        let tracer = InMemoryTracer()
        let mock = try await MockProvider.start(
            MockScenario(rules: [
                MockRule(
                    match: MockMatch(promptContains: "flaky"),
                    responses: [
                        MockResponse(status: 503),
                        MockResponse(status: 200, text: "fine", usage: MockUsage(inputTokens: 40, outputTokens: 9))
                    ]),
                MockRule(responses: [MockResponse(status: 200, text: "ok", usage: MockUsage(inputTokens: 30, outputTokens: 7))])
            ]))
        let llm = LLMConfiguration(providers: [mock.provider("primary", model: "model-a")])
        var workflows = WorkflowRegistry()
        workflows.register(LLMCalls.self)
        let stack = try LLMStack(mock: mock, llm: llm, workflows: workflows, tracer: tracer)
        defer { stack.stop() }
        let (output, run) = try await stack.run(LLMCalls.self, "traced", .init(prompts: ["steady", "flaky"]))
        #expect(output.calls.map(\.text) == ["ok", "fine"])

        // The run's span ends when the run closes.
        var spans: [FinishedInMemorySpan] = []
        #expect(
            await eventually(10) {
                spans = tracer.finishedSpans
                return spans.contains { $0.operationName == "workflow test-llm-calls" }
            })
        let root = try #require(spans.first { $0.operationName == "workflow test-llm-calls" })
        #expect(root.attributes["keel.run.id"]?.toSpanAttribute() == .string(run.runId))
        #expect(root.attributes["keel.workflow.status"]?.toSpanAttribute() == .string("completed"))
        #expect(root.attributes["gen_ai.usage.input_tokens"]?.toSpanAttribute() == .int64(70))

        // Three attempts on the worker (one for "steady", a failed and a good one for "flaky"),
        // each a child of the run's span, in the run's trace.
        func activityId(_ span: FinishedInMemorySpan) -> Int64 {
            if case .int64(let id)? = span.attributes["keel.activity.id"]?.toSpanAttribute() { return id }
            return -1
        }
        let attempts = spans.filter { $0.operationName == "activity llm.complete" }
            .sorted {
                (activityId($0), $0.startInstant.nanosecondsSinceEpoch) < (activityId($1), $1.startInstant.nanosecondsSinceEpoch)
            }
        try #require(attempts.count == 3, "\(spans.map(\.operationName))")
        for attempt in attempts {
            #expect(attempt.traceID == root.traceID)
            #expect(attempt.parentSpanID == root.spanID)
            #expect(attempt.attributes["keel.task_queue"]?.toSpanAttribute() == .string("llm"))
            #expect(attempt.attributes["keel.worker"]?.toSpanAttribute() == .string("llm-worker"))
            #expect(attempt.attributes["gen_ai.provider.name"]?.toSpanAttribute() == .string("primary"))
        }
        #expect(attempts.map { $0.attributes["keel.activity.attempt"]?.toSpanAttribute() } == [.int64(1), .int64(1), .int64(2)])
        #expect(
            attempts.map { $0.attributes["keel.activity.outcome"]?.toSpanAttribute() } == [
                .string("completed"), .string("failed"), .string("completed")
            ])
        #expect(attempts[1].attributes["error.type"]?.toSpanAttribute() == .string("LLMUnavailable"))
        #expect(attempts[2].attributes["gen_ai.request.model"]?.toSpanAttribute() == .string("model-a"))
        #expect(attempts[2].attributes["gen_ai.usage.input_tokens"]?.toSpanAttribute() == .int64(40))
        #expect(attempts[2].attributes["gen_ai.usage.output_tokens"]?.toSpanAttribute() == .int64(9))
        #expect(attempts[0].attributes["keel.cost_usd"] != nil)
        // The context travelled in the task messages' AMQP headers (a task's say `keel-version: 2`):
        // the worker extracted it there.
        #expect(
            tracer.performedContextExtractions.contains { extraction in
                (extraction.carrier as? [String: String])?["keel-version"] == "2"
                    && extraction.context.inMemorySpanContext?.spanID == root.spanID
            })
    }
}
