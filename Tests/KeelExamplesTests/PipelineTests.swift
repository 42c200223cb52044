import Foundation
import Keel
import KeelExamples
import KeelMockLLM
import KeelTestKit
import Testing

/// The reference pipelines end to end, each with its failure path, on the real broker and
/// SQLite, with `keel mock-llm` as the LLM provider and business endpoints.
@Suite("reference pipelines", .serialized, .tags(.integration), .timeLimit(.minutes(3)))
struct PipelineTests {
    static let documents = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/documents").path

    static func stack(
        _ scenario: MockScenario, providers: ((MockProvider) -> [LLMProviderConfiguration])? = nil, gpuConcurrency: Int? = nil
    ) async throws -> LLMStack {
        let mock = try await MockProvider.start(scenario, documentsDirectory: documents)
        var workflows = WorkflowRegistry()
        for workflow: any Workflow.Type in [
            InvoiceProcessing.self, TripBooking.self, SummaryApproval.self, AgentLoop.self, GPUInference.self,
            DocumentProcessing.self
        ] {
            workflows.register(workflow)
        }
        var activities = ActivityRegistry()
        activities.register(FetchDocument())
        activities.register(PostBill())
        activities.register(TripBooking.Book())
        activities.register(TripBooking.CancelBooking())
        let llm = LLMConfiguration(providers: providers?(mock) ?? [mock.provider("primary", model: "model-a")])
        return try LLMStack(mock: mock, llm: llm, workflows: workflows, activities: activities, gpuConcurrency: gpuConcurrency)
    }

    static let invoiceJSON =
        #"{"vendor": "Northwind Traders", "invoiceNumber": "1001", "total": 4500.0, "currency": "EUR", "dueDate": "2026-12-02"}"#

    // MARK: invoice

    @Test func invoiceFromAPDFIsBilledOnceThoughTheFirstResponseIsLostAndTheWebhookFiresTwice() async throws {
        let stack = try await Self.stack(
            MockScenario(
                // Matches only if the PDF's text reached the prompt (through pdftotext).
                rules: [
                    MockRule(
                        match: MockMatch(promptContains: "Total due: 4,500.00 EUR"),
                        responses: [MockResponse(text: "```json\n\(Self.invoiceJSON)\n```")])
                ],
                services: MockServicesScenario(accountingLostResponses: 1)))
        defer { stack.stop() }
        let documentURL = stack.mock.baseURL + "/documents/invoice-1001"
        let id = InvoiceProcessing.workflowId(for: documentURL)
        #expect(id == "invoice-http-127-0-0-1-\(stack.mock.port)-documents-invoice-1001")
        let input = InvoiceProcessing.Input(documentURL: documentURL, accountingURL: stack.mock.baseURL)
        // The webhook fires twice: one run.
        let first = try await stack.client.startAndConfirm(try StartRequest(InvoiceProcessing.self, id: id, input: input))
        let second = try await stack.client.startAndConfirm(try StartRequest(InvoiceProcessing.self, id: id, input: input))
        #expect(first.runId == second.runId && !second.started)
        let run = try await stack.client.waitForResult(workflowId: id, timeout: 60)
        #expect(run.status == .completed, "\(run.failure?.description ?? "")")
        let output = try #require(try run.result?.decode(InvoiceProcessing.Output.self))
        #expect(output.invoice.total == 4500 && output.invoice.vendor == "Northwind Traders")
        // The first post's response was lost and the post retried: still one bill.
        let bills = await stack.mock.server.bills()
        #expect(bills.count == 1)
        #expect(output.billId == bills.first?.id)
        let events = try stack.store().events(runId: run.runId)
        #expect(events.contains { $0.kind == .activityFailed && $0.failure?.type == "ServiceUnavailable" })
        #expect(await stack.mock.requests().map(\.rule) == [0], "the PDF's text was in the prompt")
    }

    @Test func invoiceWithInvalidJSONFailsWithoutRetryingOrBilling() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(
                    match: MockMatch(promptContains: "[invoice]"),
                    responses: [MockResponse(text: "Sure! The total is 4,500 EUR.")])
            ]))
        defer { stack.stop() }
        let documentURL = stack.mock.baseURL + "/documents/invoice-1001"
        let id = InvoiceProcessing.workflowId(for: documentURL)
        _ = try await stack.client.startAndConfirm(
            try StartRequest(
                InvoiceProcessing.self, id: id, input: .init(documentURL: documentURL, accountingURL: stack.mock.baseURL)))
        let run = try await stack.client.waitForResult(workflowId: id, timeout: 60)
        #expect(run.status == .failed)
        #expect(run.failure?.type == "LLMInvalidOutput")
        #expect(await stack.mock.requests().count == 1)
        #expect(await stack.mock.server.bills().isEmpty)
    }

    // MARK: trip booking

    @Test func tripIsBookedWithAnItinerary() async throws {
        let stack = try await Self.stack(MockScenario(rules: [MockRule(responses: [MockResponse(text: "Day 1: arrive.")])]))
        defer { stack.stop() }
        let (output, _) = try await stack.run(
            TripBooking.self, "trip-ok",
            .init(traveller: "Ana", destination: "Lisbon", dates: "May 3-6", bookingsURL: stack.mock.baseURL))
        #expect(output.itinerary == "Day 1: arrive.")
        #expect(await stack.mock.server.bookings().map(\.status) == ["booked", "booked"])
    }

    @Test func aFailureAfterTheBookingsCancelsThemInReverseOrder() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(
                    match: MockMatch(promptContains: "[itinerary]"), responses: [MockResponse(status: 400, message: "rejected")])
            ]))
        defer { stack.stop() }
        _ = try await stack.client.startAndConfirm(
            try StartRequest(
                TripBooking.self, id: "trip-saga",
                input: .init(traveller: "Ana", destination: "Lisbon", dates: "May 3-6", bookingsURL: stack.mock.baseURL)))
        let run = try await stack.client.waitForResult(workflowId: "trip-saga", timeout: 60)
        #expect(run.status == .failed)
        #expect(run.failure?.message.contains("LLMBadRequest") == true, "\(run.failure?.description ?? "")")
        let bookings = await stack.mock.server.bookings()
        #expect(bookings.map(\.kind) == ["flight", "hotel"])
        #expect(bookings.map(\.status) == ["cancelled", "cancelled"])
        #expect(bookings.map(\.cancelledOrder) == [2, 1], "the hotel first, then the flight")
    }

    @Test func aRefusedHotelCancelsTheFlight() async throws {
        let stack = try await Self.stack(MockScenario(services: MockServicesScenario(failingBookings: ["hotel"])))
        defer { stack.stop() }
        _ = try await stack.client.startAndConfirm(
            try StartRequest(
                TripBooking.self, id: "trip-no-hotel",
                input: .init(traveller: "Ana", destination: "Lisbon", dates: "May 3-6", bookingsURL: stack.mock.baseURL)))
        let run = try await stack.client.waitForResult(workflowId: "trip-no-hotel", timeout: 60)
        #expect(run.status == .failed)
        let bookings = await stack.mock.server.bookings()
        #expect(bookings.map(\.kind) == ["flight"])
        #expect(bookings.first?.status == "cancelled")
        #expect(await stack.mock.requests().isEmpty, "no itinerary without a hotel")
    }

    // MARK: summary approval

    @Test func summaryWaitsForApprovalAndAnswersStatusAtEveryStage() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [MockRule(responses: [MockResponse(text: "Short summary.", delayMs: 500)])]))
        defer { stack.stop() }
        _ = try await stack.client.startAndConfirm(
            try StartRequest(SummaryApproval.self, id: "review", input: .init(text: "A long report.")))
        func stage() async throws -> String {
            try await stack.client.query(workflowId: "review", name: "status").decode(SummaryApproval.Status.self).stage
        }
        #expect(try await stage() == "summarising")
        #expect(try await eventually(20) { try await stage() == "awaiting approval" })
        try await stack.client.signal(
            workflowId: "review", name: "approve",
            input: try Payload(encoding: SummaryApproval.Decision(by: "ana"), field: "signal"))
        let run = try await stack.client.waitForResult(workflowId: "review", timeout: 30)
        let status = try #require(try run.result?.decode(SummaryApproval.Status.self))
        #expect(status == SummaryApproval.Status(stage: "approved", summary: "Short summary.", decidedBy: "ana"))
        // A closed run still answers (replayed from history).
        #expect(try await stage() == "approved")
    }

    @Test func summaryApprovalTimesOut() async throws {
        let stack = try await Self.stack(MockScenario())
        defer { stack.stop() }
        let (status, _) = try await stack.run(SummaryApproval.self, "review-timeout", .init(text: "x", approvalTimeoutSeconds: 1))
        #expect(status.stage == "timed out")
    }

    // MARK: agent loop

    @Test func stepSevenOfTwelveFailsAndOnlyItIsRetried() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(
                    match: MockMatch(promptContains: "[agent step 7 of 12]"),
                    responses: [MockResponse(status: 503), MockResponse(status: 503), MockResponse(text: "step seven done")]),
                MockRule(responses: [MockResponse(text: "done")])
            ]))
        defer { stack.stop() }
        let (output, run) = try await stack.run(AgentLoop.self, "agent", .init(task: "plan a migration", steps: 12))
        #expect(output.steps.map(\.step) == Array(1...12))
        #expect(output.steps[6].output == "step seven done")
        let requests = await stack.mock.requests()
        let perStep = Dictionary(grouping: requests) { $0.promptPreview.prefix(while: { $0 != "]" }) }.mapValues(\.count)
        #expect(perStep.count == 12)
        #expect(perStep["[agent step 7 of 12"] == 3)
        #expect(perStep.values.reduce(0, +) == 14, "every other step called once")
        // Each step's notes carry the previous steps forward.
        #expect(requests.last?.promptPreview.contains("Task: plan a migration") == true)
        #expect(try stack.store().events(runId: run.runId).filter { $0.kind == .activityFailed }.count == 2)
    }

    // MARK: gpu bulkhead

    @Test func aFloodOfGPUWorkDoesNotStarveTheLLMQueue() async throws {
        let stack = try await Self.stack(
            MockScenario(rules: [
                MockRule(match: MockMatch(pathPrefix: "/local"), responses: [MockResponse(text: "gpu", delayMs: 400)]),
                MockRule(responses: [MockResponse(text: "fast")])
            ]),
            providers: { mock in
                var local = mock.provider("local", api: .openai, model: "qwen")
                local.baseURL = mock.baseURL + "/local/v1"
                local.defaultChain = false
                return [mock.provider("primary", model: "model-a"), local]
            },
            gpuConcurrency: 1)
        defer { stack.stop() }
        _ = try await stack.client.startAndConfirm(
            try StartRequest(
                GPUInference.self, id: "gpu-flood", input: .init(prompts: (1...6).map { "image \($0)" }, concurrency: 6)))
        let (agent, _) = try await stack.run(AgentLoop.self, "llm-meanwhile", .init(task: "t", steps: 3))
        #expect(agent.steps.count == 3)
        let gpu = try await stack.client.waitForResult(workflowId: "gpu-flood", timeout: 60)
        #expect(gpu.status == .completed)
        let mock = stack.mock
        let requests = await mock.requests()
        let gpuTimes = requests.filter { $0.path.hasPrefix("/local") }.map(\.time)
        let llmTimes = requests.filter { !$0.path.hasPrefix("/local") }.map(\.time)
        #expect(gpuTimes.count == 6 && llmTimes.count == 3)
        // One gpu call at a time (concurrency 1, 400 ms each); the llm calls ran meanwhile.
        #expect(try #require(llmTimes.max()) < (try #require(gpuTimes.max())))
        #expect(zip(gpuTimes.sorted(), gpuTimes.sorted().dropFirst()).allSatisfy { $1.timeIntervalSince($0) >= 0.35 })
    }
}
