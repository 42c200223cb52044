import Foundation
import Keel
import KeelTestKit
import Testing

/// `OTEL_EXPORTER_OTLP_ENDPOINT` makes the coordinator and worker processes export their spans
/// over OTLP/HTTP; both land in the run's trace, whose id is derived from the run id.
@Suite("OTLP trace export", .tags(.integration), .timeLimit(.minutes(2)))
struct TraceExportTests {
    /// An OTLP/HTTP receiver that keeps every request body as a file.
    static let sink = """
        import http.server, itertools, os, sys
        counter = itertools.count()
        class Sink(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with open(os.path.join(sys.argv[2], "%d%s.bin" % (next(counter), self.path.replace("/", "_"))), "wb") as f:
                    f.write(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            def log_message(self, *arguments):
                pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
        """

    @Test func coordinatorAndWorkerSpansShareTheRunsTrace() async throws {
        let received = makeTemporaryDirectory("keel-otlp")
        defer { try? FileManager.default.removeItem(at: received) }
        let port = freeLocalPort()
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        receiver.arguments = ["python3", "-c", Self.sink, port, received.path]
        // Not the test run's own output: a receiver left behind must not hold `swift test`'s pipe open.
        receiver.standardOutput = FileHandle.nullDevice
        receiver.standardError = FileHandle.nullDevice
        try receiver.run()
        defer { kill(receiver.processIdentifier, SIGKILL) }

        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = [
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(port)", "OTEL_BSP_SCHEDULE_DELAY": "100"
        ]
        try deployment.startCoordinator()
        try deployment.startWorker()
        let started = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "exported",
                input: try Payload(encoding: ["steps": 2, "milliseconds": 10], field: "input")))
        #expect(try await deployment.client.waitForResult(workflowId: "exported", timeout: 30).status == .completed)

        let traceId = TraceIdentity.traceId(runId: started.runId)
        let traceBytes = Data(
            stride(from: 0, to: traceId.count, by: 2).map { offset in
                let start = traceId.index(traceId.startIndex, offsetBy: offset)
                return UInt8(traceId[start..<traceId.index(start, offsetBy: 2)], radix: 16)!
            })
        func bodies() -> [Data] {
            ((try? FileManager.default.contentsOfDirectory(at: received, includingPropertiesForKeys: nil)) ?? [])
                .filter { $0.lastPathComponent.hasSuffix("_v1_traces.bin") }
                .compactMap { try? Data(contentsOf: $0) }
        }
        func exported(by service: String, span: String) -> Bool {
            bodies().contains { body in
                body.range(of: Data(service.utf8)) != nil && body.range(of: Data(span.utf8)) != nil
                    && body.range(of: traceBytes) != nil
            }
        }
        #expect(
            try await eventually(15) {
                exported(by: "keel-coordinator", span: "workflow bench-steps")
                    && exported(by: "keel-worker", span: "activity sleep")
            }, "\(bodies().count) export(s)")
    }
}
