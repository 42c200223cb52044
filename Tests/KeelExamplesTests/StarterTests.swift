import Foundation
import Keel
import KeelMockLLM
import KeelTestKit
import Testing

/// The README's "your own pipeline" example: `TriageTickets.swift` here is a link to
/// `examples/starter/Sources/Starter/TriageTickets.swift`, so the suite compiles and runs the very
/// file the README shows.
@Suite("the README's starter pipeline", .tags(.integration), .timeLimit(.minutes(2)))
struct StarterTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func theReadmeShowsTheStarterFileVerbatim() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let source = try String(
            contentsOf: Self.root.appendingPathComponent("examples/starter/Sources/Starter/TriageTickets.swift"), encoding: .utf8)
        #expect(readme.contains("```swift\n" + source + "```"))
    }

    @Test func theStarterPipelineRuns() async throws {
        let mock = try await MockProvider.start(
            MockScenario(rules: [
                MockRule(match: MockMatch(promptContains: "server down"), responses: [MockResponse(text: "Urgent.")]),
                MockRule(responses: [MockResponse(text: "Routine.")])
            ]))
        let llm = LLMConfiguration(providers: [mock.provider("primary", model: "m")])
        let stack = try LLMStack(
            mock: mock, llm: llm, workflows: Starter.workflows,
            activities: Starter.activities(configuration: KeelConfiguration(llm: llm)))
        defer { stack.stop() }
        let (labels, run) = try await stack.run(
            TriageTickets.self, "triage", ["server down in eu-west", "typo on the pricing page"])
        #expect(labels == ["server down in eu-west": "urgent", "typo on the pricing page": "routine"])
        let pages = try stack.store().events(runId: run.runId).filter {
            $0.kind == .activityScheduled && $0.name == "page-on-call"
        }
        #expect(pages.count == 1)
    }
}
