import Foundation
import Keel
import KeelTestKit
import Testing

/// The demo and the deployment files, as a newcomer runs them.
@Suite("scripts/demo, scripts/stack and the compose file", .tags(.integration), .timeLimit(.minutes(6)))
struct OperationsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        try await runToEnd(URL(fileURLWithPath: "/usr/bin/env"), arguments, environment: environment, directory: root)
    }

    @Test func demoRunsToCompletionInCIMode() async throws {
        let directory = makeTemporaryDirectory("keel-demo")
        defer { try? FileManager.default.removeItem(at: directory) }
        let started = Date()
        let port = freeLocalPort()
        let httpPort = freeLocalPort()
        // The demo's dead letters stay in its namespace's queues: removed with them.
        let topology = Topology.forTest()
        defer { if let url = try? AMQPURL.fromEnvironment() { topology.remove(from: url) } }
        let demo = try await Self.run(
            ["bash", "scripts/demo"],
            environment: [
                "CI": "true", "KEEL_BIN": KeelProcess.binary.path, "KEEL_MOCK_PORT": port, "KEEL_HTTP_PORT": httpPort,
                "KEEL_DEMO_DIR": directory.path, "KEEL_NAMESPACE": topology.namespace
            ])
        #expect(demo.status == 0, "\(demo.output)")
        #expect(demo.output.contains("the new coordinator recovered 1 open runs"), "\(demo.output)")
        #expect(demo.output.contains("status            completed"))
        #expect(demo.output.contains("dead-lettered     2  contract-07 (LLMBadRequest), memo-19 (LLMBadRequest)"))
        #expect(demo.output.contains("summarised twice  0"))
        #expect(demo.output.contains("http://127.0.0.1:\(httpPort)/console/#/run/"))
        #expect(Date().timeIntervalSince(started) < 300, "CI mode must finish within 5 minutes")
        // It stopped what it started.
        // (Regexes that do not match their own command line.)
        let leftovers = try await Self.run([
            "bash", "-c",
            "pgrep -f 'keel (coordinator|worker).*\(directory.path)'; pgrep -f 'keel [m]ock-llm --port \(port) '; true"
        ])
        #expect(leftovers.output.isEmpty)
        #expect(
            try await Self.run(["bash", "-c", "ls \(directory.path)/pids"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
                .isEmpty)
    }

    @Test func stackScalesWorkersPerQueue() async throws {
        let directory = makeTemporaryDirectory("keel-stack")
        defer { try? FileManager.default.removeItem(at: directory) }
        let topology = Topology.forTest()
        let environment = [
            "KEEL_BIN": KeelProcess.binary.path, "KEEL_STACK_DIR": directory.path, "KEEL_NAMESPACE": topology.namespace
        ]
        do {
            try await Self.scaleStack(environment, topology)
        } catch {
            _ = try? await Self.run(["bash", "scripts/stack", "down"], environment: environment)
            throw error
        }
        _ = try await Self.run(["bash", "scripts/stack", "down"], environment: environment)
        let url = try AMQPURL.fromEnvironment()
        try await offPool { topology.remove(from: url) }
    }

    static func scaleStack(_ environment: [String: String], _ topology: Topology) async throws {
        let up = try await Self.run(["bash", "scripts/stack", "up", "default=1", "llm=1"], environment: environment)
        #expect(up.status == 0, "\(up.output)")
        let scaled = try await Self.run(["bash", "scripts/stack", "scale", "llm=3"], environment: environment)
        #expect(scaled.status == 0, "\(scaled.output)")
        let status = try await Self.run(["bash", "scripts/stack", "status"], environment: environment)
        #expect(
            status.output.split(separator: "\n").filter { $0.hasPrefix("worker-llm-") && $0.contains("running") }.count == 3,
            "\(status.output)")
        // Three llm workers really consume the queue.
        let url = try AMQPURL.fromEnvironment()
        let consumers = try await offPool {
            let connection = try AMQPConnection(url: url)
            defer { connection.close() }
            return try connection.inspect(queue: topology.queue(forTaskQueue: "llm")).consumers
        }
        #expect(consumers == 3)
        let down = try await Self.run(["bash", "scripts/stack", "scale", "llm=1"], environment: environment)
        #expect(down.status == 0)
        let after = try await Self.run(["bash", "scripts/stack", "status"], environment: environment)
        #expect(after.output.split(separator: "\n").filter { $0.hasPrefix("worker-llm-") }.count == 1, "\(after.output)")
        // A coordinator that died is started again by `up`; the dead one's log is kept.
        let stack = URL(fileURLWithPath: environment["KEEL_STACK_DIR"]!)
        let pid = try String(contentsOf: stack.appendingPathComponent("pids/coordinator.pid"), encoding: .utf8)
        let coordinator = try #require(pid_t(pid.trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(coordinator, SIGKILL)
        // The kill is delivered, not done, when `kill` returns: an `up` before the process is gone
        // still finds the coordinator running and starts none.
        #expect(await eventually(20) { !processExists(pid: coordinator) }, "the killed coordinator is gone")
        let again = try await Self.run(["bash", "scripts/stack", "up", "default=1", "llm=1"], environment: environment)
        #expect(again.status == 0, "\(again.output)")
        let logs = stack.appendingPathComponent("logs")
        let previous = try String(contentsOf: logs.appendingPathComponent("coordinator.log.1"), encoding: .utf8)
        let current = try String(contentsOf: logs.appendingPathComponent("coordinator.log"), encoding: .utf8)
        #expect(previous.contains("coordinator running"), "the dead coordinator's log is kept")
        #expect(current.contains("coordinator running") && current.contains("recovered"), "\(current)")
        let bad = try await Self.run(["bash", "scripts/stack", "scale", "llm=lots"], environment: environment)
        #expect(bad.status != 0)
        #expect(bad.output.contains("'lots' is not a number of workers"))
    }

    @Test func composeFileIsValidAndNeedsRealCredentials() async throws {
        let valid = try await Self.run(
            ["docker-compose", "-f", "compose/docker-compose.yml", "--env-file", "compose/.env.example", "config"])
        #expect(valid.status == 0, "\(valid.output)")
        for service in ["rabbitmq:", "coordinator:", "worker-default:", "worker-llm:", "worker-gpu:"] {
            #expect(valid.output.contains("  \(service)"), "\(service)")
        }
        #expect(valid.output.contains("amqp://keel:change-me@rabbitmq:5672/"))
        // The base file runs on a host without an NVIDIA runtime; the override adds the GPU.
        #expect(!valid.output.contains("nvidia"), "\(valid.output)")
        let gpu = try await Self.run(
            [
                "docker-compose", "-f", "compose/docker-compose.yml", "-f", "compose/compose.gpu.yaml", "--env-file",
                "compose/.env.example", "config"
            ])
        #expect(gpu.status == 0, "\(gpu.output)")
        #expect(gpu.output.contains("driver: nvidia"), "\(gpu.output)")
        #expect(gpu.output.contains("- gpu"))
        let services = try await Self.run(
            [
                "docker-compose", "-f", "compose/docker-compose.yml", "--env-file", "compose/.env.example", "--profile", "mock",
                "config", "--services"
            ])
        #expect(services.output.split(separator: "\n").contains("mock-llm"))
        let standby = try await Self.run(
            [
                "docker-compose", "-f", "compose/docker-compose.yml", "--env-file", "compose/.env.example", "--profile",
                "standby",
                "config"
            ])
        #expect(standby.status == 0, "\(standby.output)")
        #expect(standby.output.contains("coordinator-standby:") && standby.output.contains("- --standby"), "\(standby.output)")
        // A standby with its own volume, following the replicated log.
        let replica = try await Self.run(
            [
                "docker-compose", "-f", "compose/docker-compose.yml", "--env-file", "compose/.env.example", "--profile",
                "replica", "config"
            ], environment: ["KEEL_REPLICATION": "stream"])
        #expect(replica.status == 0, "\(replica.output)")
        #expect(replica.output.contains("coordinator-replica:") && replica.output.contains("keel-replica:/var/lib/keel"))
        #expect(replica.output.contains("KEEL_REPLICATION: stream"), "\(replica.output)")
        // A team's own image (examples/starter/Dockerfile) runs every keel service.
        // (docker-compose 1.29's `config` lists the services of every profile: seven run keel.)
        #expect(valid.output.components(separatedBy: "image: keel:latest").count == 8, "\(valid.output)")
        let own = try await Self.run(
            ["docker-compose", "-f", "compose/docker-compose.yml", "--env-file", "compose/.env.example", "config"],
            environment: ["KEEL_IMAGE": "triage:latest", "KEEL_DOCKERFILE": "examples/starter/Dockerfile"])
        #expect(own.status == 0, "\(own.output)")
        #expect(own.output.components(separatedBy: "image: triage:latest").count == 8, "\(own.output)")
        #expect(!own.output.contains("keel:latest"))
        #expect(own.output.contains("dockerfile: examples/starter/Dockerfile"))
        #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent("examples/starter/Dockerfile").path))
        // Without credentials (no guest fallback) the file refuses to render.
        let empty = makeTemporaryDirectory("keel-env")
        defer { try? FileManager.default.removeItem(at: empty) }
        let envFile = empty.appendingPathComponent("empty.env")
        try Data().write(to: envFile)
        let refused = try await Self.run([
            "docker-compose", "-f", "compose/docker-compose.yml", "--env-file", envFile.path, "config"
        ])
        #expect(refused.status != 0)
        #expect(refused.output.contains("set RABBITMQ_USER in .env"), "\(refused.output)")
    }
}
