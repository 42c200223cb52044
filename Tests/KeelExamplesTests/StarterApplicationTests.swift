import Foundation
import Keel
import KeelMockLLM
import KeelTestKit
import Testing

/// `examples/starter` as a team ships it: its own `triage` executable (`KeelApplication`), run
/// through `scripts/stack` as separate coordinator and worker processes, its histories replayed by
/// its own `triage replay`, and a changed workflow caught by that replay.
@Suite("the starter's own command line", .tags(.integration), .timeLimit(.minutes(15)))
struct StarterApplicationTests {
    static let root = StarterTests.root
    static let starter = root.appendingPathComponent("examples/starter")

    /// The starter's `triage` executable, as `scripts/test` built it before the suite; built here
    /// when it is missing (`swift test` alone), at the lowest CPU priority: the suite's other
    /// tests share the machine's cores.
    static func triage() async throws -> URL {
        let binary = starter.appendingPathComponent(".build/debug/triage")
        if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        let built = try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "nice", "-n", "19", "swift", "build", "--package-path", starter.path, "--product", "triage",
                // A cached manifest misses source files new in Keel since the last build.
                "--disable-build-manifest-caching"
            ],
            environment: [:], directory: root)
        try #require(built.status == 0, "examples/starter builds: \(built.output)")
        return binary
    }

    /// The starter with one change to `TriageTickets`: a durable sleep before paging on-call.
    /// Built beside it (same scratch path, so only the changed targets compile), as
    /// `triage-changed`.
    static func changedTriage(in directory: URL) async throws -> URL {
        let package = directory.appendingPathComponent("changed")
        let sources = package.appendingPathComponent("Sources")
        for target in ["StarterChanged", "triage-changed"] {
            try FileManager.default.createDirectory(
                at: sources.appendingPathComponent(target), withIntermediateDirectories: true)
        }
        let workflow = try String(
            contentsOf: starter.appendingPathComponent("Sources/Starter/TriageTickets.swift"), encoding: .utf8)
        let pageCall = "                _ = try await context.execute(\n                    PageOnCall.self"
        try #require(workflow.contains(pageCall))
        try workflow.replacingOccurrences(
            of: pageCall, with: "                try await context.sleep(for: .milliseconds(1))\n" + pageCall
        ).write(to: sources.appendingPathComponent("StarterChanged/TriageTickets.swift"), atomically: true, encoding: .utf8)
        let main = try String(contentsOf: starter.appendingPathComponent("Sources/triage/Triage.swift"), encoding: .utf8)
        try main.replacingOccurrences(of: "import Starter\n", with: "import StarterChanged\n")
            .write(to: sources.appendingPathComponent("triage-changed/Triage.swift"), atomically: true, encoding: .utf8)
        let manifest = """
            // swift-tools-version:6.0
            import PackageDescription
            let package = Package(
                name: "StarterChanged", platforms: [.macOS(.v15)],
                dependencies: [.package(name: "Keel", path: "\(root.path)")],
                targets: [
                    .target(name: "StarterChanged", dependencies: [.product(name: "Keel", package: "Keel")]),
                    .executableTarget(
                        name: "triage-changed",
                        dependencies: [
                            "StarterChanged", .product(name: "Keel", package: "Keel"),
                            .product(name: "KeelCommandLine", package: "Keel"),
                        ])
                ])
            """
        try manifest.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        let scratch = starter.appendingPathComponent(".build")
        let built = try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "nice", "-n", "19", "swift", "build", "--package-path", package.path, "--scratch-path", scratch.path,
                "--disable-build-manifest-caching"
            ],
            environment: [:], directory: root)
        try #require(built.status == 0, "the changed starter builds: \(built.output)")
        return scratch.appendingPathComponent("debug/triage-changed")
    }

    @Test func theStarterRunsOnTheStackAndReplaysItsOwnHistories() async throws {
        let triage = try await Self.triage()
        let mock = try await MockProvider.start(
            MockScenario(rules: [
                MockRule(match: MockMatch(promptContains: "server down"), responses: [MockResponse(text: "Urgent.")]),
                MockRule(responses: [MockResponse(text: "Routine.")])
            ]))
        let directory = makeTemporaryDirectory("keel-starter")
        defer { try? FileManager.default.removeItem(at: directory) }
        let topology = Topology.forTest()
        let environment = [
            "KEEL_BIN": triage.path, "KEEL_STACK_DIR": directory.path, "KEEL_NAMESPACE": topology.namespace,
            "KEEL_LLM_BASE_URL": mock.baseURL + "/v1", "KEEL_LLM_MODEL": "m"
        ]
        func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            try await runToEnd(URL(fileURLWithPath: "/usr/bin/env"), arguments, environment: environment, directory: Self.root)
        }
        func triageRun(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            try await runToEnd(
                triage, arguments,
                environment: environment.merging(["KEEL_DB": directory.appendingPathComponent("keel.sqlite").path]) {
                    $1
                })
        }
        defer {
            BackgroundCleanups.run {
                let down = Process()
                down.executableURL = URL(fileURLWithPath: "/bin/bash")
                down.arguments = [Self.root.appendingPathComponent("scripts/stack").path, "down"]
                down.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
                try? down.run()
                down.waitUntilExit()
                if let url = try? AMQPURL.fromEnvironment() { topology.remove(from: url) }
            }
        }

        let up = try await run(["bash", "scripts/stack", "up", "default=1", "llm=1"])
        #expect(up.status == 0, "\(up.output)")
        let scaled = try await run(["bash", "scripts/stack", "scale", "llm=2"])
        #expect(scaled.status == 0, "\(scaled.output)")
        let url = try AMQPURL.fromEnvironment()
        let consumers = try await offPool {
            let connection = try AMQPConnection(url: url)
            defer { connection.close() }
            return try connection.inspect(queue: topology.queue(forTaskQueue: "llm")).consumers
        }
        #expect(consumers == 2, "two triage workers serve llm")

        let started = try await triageRun([
            "start", "triage-tickets", "--id", "t-1", "--input", #"["server down in eu-west", "typo on the pricing page"]"#,
            "--wait"
        ])
        #expect(started.status == 0, "\(started.output)")
        #expect(started.output.contains(#""server down in eu-west":"urgent""#), "\(started.output)")
        let shown = try await triageRun(["show", "t-1"])
        #expect(shown.output.contains("page-on-call"), "\(shown.output)")

        let export = directory.appendingPathComponent("t-1.json")
        let exported = try await triageRun(["history", "export", "t-1", "--out", export.path])
        #expect(exported.status == 0, "\(exported.output)")
        let replayed = try await triageRun(["replay", "--file", export.path])
        #expect(replayed.status == 0, "\(replayed.output)")
        #expect(replayed.output.contains("triage-tickets t-1: deterministic"), "\(replayed.output)")

        // `keel` does not have the starter's workflows, and says so.
        let foreign = try await runToEnd(KeelProcess.binary, ["replay", "--file", export.path], environment: environment)
        #expect(foreign.status != 0)
        #expect(foreign.output.contains("triage-tickets"), "\(foreign.output)")

        let changed = try await Self.changedTriage(in: directory)
        let diverged = try await runToEnd(changed, ["replay", "--file", export.path], environment: environment)
        #expect(diverged.status == 1, "\(diverged.output)")
        #expect(diverged.output.contains("NON-DETERMINISTIC"), "\(diverged.output)")
        #expect(diverged.output.contains("page-on-call"), "the divergence names the step: \(diverged.output)")

        let down = try await run(["bash", "scripts/stack", "down"])
        #expect(down.status == 0, "\(down.output)")
        _ = mock
    }
}
