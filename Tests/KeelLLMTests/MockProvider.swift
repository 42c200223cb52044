import Foundation
import Keel
import KeelMockLLM
import KeelTestKit
import Logging

/// `keel mock-llm` served in-process on a free port, over real HTTP.
final class MockProvider: Sendable {
    let server: MockLLMServer
    let port: Int
    private let serving: Task<Void, any Error>

    private init(server: MockLLMServer, port: Int, serving: Task<Void, any Error>) {
        self.server = server
        self.port = port
        self.serving = serving
    }

    static func start(_ scenario: MockScenario = MockScenario()) async throws -> MockProvider {
        var logger = Logger(label: "keel.mock-llm")
        logger.logLevel = .critical  // cancelling the server task logs errors about its channels
        let server = MockLLMServer(port: 0, scenario: scenario, logger: logger)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let serving = Task { try await server.run(handleSignals: false) { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw MockScenarioError(message: "the mock did not start") }
        return MockProvider(server: server, port: port, serving: serving)
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func requests() async -> [MockRequestRecord] { await server.requests() }

    /// A provider of this mock: Anthropic API at the root, OpenAI API under `/v1`.
    func provider(
        _ name: String, api: LLMProviderConfiguration.API = .anthropic, model: String, apiKeyEnv: String? = nil
    ) -> LLMProviderConfiguration {
        LLMProviderConfiguration(
            name: name, api: api, baseURL: api == .anthropic ? baseURL : baseURL + "/v1", model: model,
            apiKeyEnv: apiKeyEnv, timeout: 20)
    }

    func stop() { serving.cancel() }
}

/// A coordinator and an `llm` worker in this process, on the real broker, with their own
/// namespace and SQLite file, calling a ``MockProvider``.
final class LLMStack: @unchecked Sendable {
    let directory = makeTemporaryDirectory("keel-llm")
    let url: AMQPURL
    let topology = Topology.forTest()
    let mock: MockProvider
    let client: KeelClient
    let coordinator: CoordinatorService
    let worker: WorkerService
    private var tasks: [Task<Void, any Error>] = []

    var databasePath: String { directory.appendingPathComponent("keel.sqlite").path }

    init(mock: MockProvider, llm: LLMConfiguration, environment: [String: String] = [:]) throws {
        self.mock = mock
        url = try AMQPURL.fromEnvironment()
        client = KeelClient(url: url, topology: topology)
        var coordinatorConfiguration = CoordinatorService.Configuration(url: url, databasePath: directory.appendingPathComponent("keel.sqlite").path)
        coordinatorConfiguration.topology = topology
        coordinatorConfiguration.coordinator.providerChain = llm.chain
        coordinatorConfiguration.coordinator.circuitBreaker = llm.circuitBreakerPolicy
        var workflows = WorkflowRegistry()
        workflows.register(LLMCalls.self)
        coordinator = CoordinatorService(configuration: coordinatorConfiguration, workflows: workflows)
        var workerConfiguration = WorkerService.Configuration(url: url, taskQueue: "llm", concurrency: 4, identity: "llm-worker")
        workerConfiguration.topology = topology
        workerConfiguration.executionLog = nil
        var activities = ActivityRegistry()
        activities.register(LLMCompleteActivity(client: LLMClient(configuration: llm, environment: environment)))
        worker = WorkerService(configuration: workerConfiguration, activities: activities)
        tasks = [Task { [coordinator] in try await coordinator.run() }, Task { [worker] in try await worker.run() }]
    }

    /// Runs ``LLMCalls`` to the end and returns its output and run.
    func run(_ id: String, _ input: LLMCalls.Input, budget: SpendLimit? = nil) async throws -> (LLMCalls.Output, RunRecord) {
        _ = try await client.startAndConfirm(
            try StartRequest(LLMCalls.self, id: id, input: input, options: WorkflowOptions(budget: budget)))
        let run = try await client.waitForResult(workflowId: id, timeout: 60)
        guard run.status == .completed, let result = run.result else {
            throw MockScenarioError(message: "run \(id) ended \(run.status): \(run.failure?.description ?? "")")
        }
        return (try result.decode(LLMCalls.Output.self), run)
    }

    func store() throws -> SQLiteHistoryStore { try SQLiteHistoryStore(path: databasePath) }

    /// Runs `keel ARGUMENTS --db <this stack's database>` to the end.
    func keel(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let arguments = arguments + ["--db", databasePath]
        return try await offPool { try runToEnd(KeelProcess.binary, arguments, environment: [:]) }
    }

    func stop() {
        coordinator.stop()
        worker.stop()
        client.close()
        mock.stop()
        topology.remove(from: url)
    }
}

/// Calls the LLM once per prompt, in order, and reports what happened to each call.
struct LLMCalls: Workflow {
    static let name = "test-llm-calls"

    struct Input: Codable, Sendable {
        var prompts: [String]
        var stream: Bool?
        var maximumAttempts: Int?
        var heartbeatTimeout: Double?
        var startToCloseTimeout: Double?
    }

    struct Call: Codable, Sendable {
        var prompt: String
        var text: String?
        var provider: String?
        var calls: Int?
        var usage: LLMUsage?
        var error: String?
        var attempts: Int?
    }

    struct Output: Codable, Sendable {
        var calls: [Call]
        var budget: Budget
    }

    func run(context: WorkflowContext, input: Input) async throws -> Output {
        let options = LLM.activityOptions(
            startToCloseTimeout: .seconds(double: input.startToCloseTimeout ?? 20),
            heartbeatTimeout: .seconds(double: input.heartbeatTimeout ?? 10),
            retryPolicy: RetryPolicy(
                initialInterval: .milliseconds(200), maximumAttempts: input.maximumAttempts ?? 3,
                nonRetryableErrorTypes: RetryPolicy.llmNonRetryableErrorTypes))
        var calls: [Call] = []
        for prompt in input.prompts {
            do {
                let answer = try await context.llm(LLMRequest(prompt: prompt, stream: input.stream ?? false), options: options)
                calls.append(Call(prompt: prompt, text: answer.text, provider: answer.provider, calls: answer.callCount, usage: answer.usage))
            } catch let error as ActivityFailedError {
                calls.append(Call(prompt: prompt, error: error.cause.type, attempts: error.attempts))
            } catch let error as any KeelError {
                calls.append(Call(prompt: prompt, error: error.errorType, attempts: 0))
            }
        }
        return Output(calls: calls, budget: context.budget)
    }
}
