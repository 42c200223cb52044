import Foundation
import Keel
import KeelTestKit
import Testing

/// Restarts RabbitMQ under running coordinator and workers. Uses a broker of its own (on a free port)
/// so the other tests' broker stays up.
@Suite("Broker restart", .tags(.integration), .timeLimit(.minutes(5)))
struct BrokerRestartTests {
    static let port = freeBrokerPort()

    static func rabbitmq(_ command: String) throws { try localBroker(command, port: port) }

    @Test func everythingCompletesOnceTheBrokerIsBack() async throws {
        try await startLocalBroker(port: Self.port)
        defer { try? Self.rabbitmq("remove") }
        let deployment = try Deployment(url: try AMQPURL("amqp://guest:guest@localhost:\(Self.port)"))
        defer { deployment.stopAll() }
        try deployment.startCoordinator()
        try deployment.startWorker(concurrency: 4)
        let ids = (1...6).map { "restart-\($0)" }
        try await deployment.startSteps(ids, StepsInput(steps: 40, milliseconds: 300))
        #expect(await eventually(30) { deployment.executions.count >= 6 }, "the run got going")
        try await offPool { try Self.rabbitmq("stop") }
        let executionsWhileDown = deployment.executions.count
        try await Task.sleep(for: .seconds(2))
        try await startLocalBroker(port: Self.port)
        for id in ids {
            let run = try await deployment.client.waitForResult(workflowId: id, timeout: 120)
            #expect(run.status == .completed, "\(id): \(run.status) \(run.failure?.description ?? "")")
            #expect(run.result?.json == "780")
        }
        #expect(executionsWhileDown < 240, "the restart happened mid-run")
        #expect(Set(deployment.executions.map { "\($0.runId)/\($0.activityId)" }).count == 240)
    }
}
