import Foundation
import Keel
import KeelTestKit
import Testing

/// What `--help` promises, checked against what the commands do.
@Suite("The command line keeps its help's word", .tags(.integration), .timeLimit(.minutes(3)))
struct CommandLineDocsTests {
    @Test func showJSONIsTheHistoryExportThatReplayReads() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        _ = try await deployment.client.startAndConfirm(
            StartRequest(workflowType: "bench-sequential", workflowId: "shown", input: try Payload(encoding: 3, field: "input")))
        let run = try await deployment.client.waitForResult(workflowId: "shown", timeout: 30)
        #expect(run.status == .completed)

        let shown = try await deployment.keel(["show", "shown", "--json"])
        #expect(shown.status == 0, "\(shown.output)")
        let exported = try await deployment.keel(["history", "export", "shown"])
        #expect(shown.output == exported.output, "show --json prints what history export writes")
        let file = deployment.directory.appendingPathComponent("shown.json")
        try Data(shown.output.utf8).write(to: file)
        let replayed = try await deployment.keel(["replay", "--file", file.path])
        #expect(replayed.status == 0, "\(replayed.output)")
        #expect(replayed.output.contains("deterministic"), "\(replayed.output)")
    }

    @Test(arguments: ["start", "cancel", "signal", "worker", "coordinator"])
    func brokerHelpNamesThePortVariable(command: String) async throws {
        let help = try await runToEnd(KeelProcess.binary, [command, "--help"], environment: [:])
        let text = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("$KEEL_AMQP_URL, else amqp://guest:guest@localhost on port $KEEL_AMQP_PORT or 5672"), "\(text)")
    }
}
