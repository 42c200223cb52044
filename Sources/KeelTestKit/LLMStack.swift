import Foundation
import Keel
import KeelMockLLM
import Logging
import Tracing

/// `keel mock-llm` served in-process on a free port, over real HTTP.
public final class MockProvider: Sendable {
    public let server: MockLLMServer
    public let port: Int
    private let stopping: MockServerStop

    private init(server: MockLLMServer, port: Int, stopping: MockServerStop) {
        self.server = server
        self.port = port
        self.stopping = stopping
    }

    public static func start(
        _ scenario: MockScenario = MockScenario(), documentsDirectory: String? = nil
    ) async throws -> MockProvider {
        var logger = Logger(label: "keel.mock-llm")
        logger.logLevel = .critical  // a stop logs errors about the channels it closes
        let server = MockLLMServer(port: 0, scenario: scenario, documentsDirectory: documentsDirectory, logger: logger)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let stopping = MockServerStop()
        Task { try await server.run(handleSignals: false, stop: stopping) { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw MockScenarioError(message: "the mock did not start") }
        return MockProvider(server: server, port: port, stopping: stopping)
    }

    public var baseURL: String { "http://127.0.0.1:\(port)" }

    public func requests() async -> [MockRequestRecord] { await server.requests() }

    /// A provider of this mock: Anthropic API at the root, OpenAI API under `/v1`.
    public func provider(
        _ name: String, api: LLMProviderConfiguration.API = .anthropic, model: String, apiKeyEnv: String? = nil
    ) -> LLMProviderConfiguration {
        LLMProviderConfiguration(
            name: name, api: api, baseURL: api == .anthropic ? baseURL : baseURL + "/v1", model: model,
            apiKeyEnv: apiKeyEnv, timeout: 20)
    }

    /// Stops the server gracefully (not by cancelling its task: swift-nio traps in a debug build
    /// when a connection was accepted and not served yet).
    public func stop() { Task { [stopping] in await stopping.trigger() } }
}

/// A coordinator and an `llm` worker in this process, on the real broker, with their own
/// namespace and SQLite file, calling a ``MockProvider``.
public final class LLMStack: @unchecked Sendable {
    public let directory = makeTemporaryDirectory("keel-llm")
    public let url: AMQPURL
    public let topology = Topology.forTest()
    public let mock: MockProvider
    public let client: KeelClient
    public private(set) var coordinator: CoordinatorService
    private let coordinatorConfiguration: CoordinatorService.Configuration
    private let workflows: WorkflowRegistry
    public let worker: WorkerService
    public let defaultWorker: WorkerService
    public let gpuWorker: WorkerService?
    private var tasks: [Task<Void, any Error>] = []

    public var databasePath: String { directory.appendingPathComponent("keel.sqlite").path }

    /// `workflows` run on the coordinator; workers serve `llm` (with `llm.complete`, concurrency
    /// `llmConcurrency`), `default` with `activities`, and, with `gpuConcurrency`, `gpu` with
    /// `llm.complete`.
    public init(
        mock: MockProvider, llm: LLMConfiguration, workflows: WorkflowRegistry, activities: ActivityRegistry = ActivityRegistry(),
        gpuConcurrency: Int? = nil, environment: [String: String] = [:], tracer: (any Tracer)? = nil,
        admission: Bool = true, llmConcurrency: Int = 4
    ) throws {
        self.mock = mock
        url = try AMQPURL.fromEnvironment()
        client = KeelClient(url: url, topology: topology)
        var coordinatorConfiguration = CoordinatorService.Configuration(
            url: url, databasePath: directory.appendingPathComponent("keel.sqlite").path)
        coordinatorConfiguration.topology = topology
        coordinatorConfiguration.coordinator.providerChain = llm.chain
        coordinatorConfiguration.coordinator.circuitBreaker = llm.circuitBreakerPolicy
        coordinatorConfiguration.coordinator.capacity = llm.capacity(enabled: admission)
        coordinatorConfiguration.coordinator.tracer = tracer
        coordinator = CoordinatorService(configuration: coordinatorConfiguration, workflows: workflows)
        self.coordinatorConfiguration = coordinatorConfiguration
        self.workflows = workflows
        let (url, topology) = (self.url, self.topology)
        func makeWorker(_ queue: String, concurrency: Int, _ activities: ActivityRegistry) -> WorkerService {
            var configuration = WorkerService.Configuration(
                url: url, taskQueue: queue, concurrency: concurrency, identity: "\(queue)-worker")
            configuration.topology = topology
            configuration.executionLog = nil
            configuration.tracer = tracer
            return WorkerService(configuration: configuration, activities: activities)
        }
        var llmActivities = ActivityRegistry()
        llmActivities.register(LLMCompleteActivity(client: LLMClient(configuration: llm, environment: environment)))
        worker = makeWorker("llm", concurrency: llmConcurrency, llmActivities)
        defaultWorker = makeWorker("default", concurrency: 4, activities)
        gpuWorker = gpuConcurrency.map { makeWorker("gpu", concurrency: $0, llmActivities) }
        tasks = [
            Task { [coordinator] in try await coordinator.run() }, Task { [worker] in try await worker.run() },
            Task { [defaultWorker] in try await defaultWorker.run() }
        ]
        if let gpuWorker { tasks.append(Task { try await gpuWorker.run() }) }
    }

    /// Runs workflow `W` to the end and returns its output and run.
    public func run<W: Workflow>(
        _ workflow: W.Type, _ id: String, _ input: W.Input, budget: SpendLimit? = nil
    ) async throws -> (W.Output, RunRecord) {
        _ = try await client.startAndConfirm(
            try StartRequest(W.self, id: id, input: input, options: WorkflowOptions(budget: budget)))
        let run = try await client.waitForResult(workflowId: id, timeout: 120)
        guard run.status == .completed, let result = run.result else {
            throw MockScenarioError(message: "run \(id) ended \(run.status): \(run.failure?.description ?? "")")
        }
        return (try result.decode(W.Output.self), run)
    }

    public func store() throws -> SQLiteHistoryStore { try SQLiteHistoryStore(path: databasePath) }

    /// Stops the coordinator (as SIGTERM would) and starts a new one on the same history.
    public func restartCoordinator() async throws {
        coordinator.stop()
        try await tasks[0].value
        coordinator = CoordinatorService(configuration: coordinatorConfiguration, workflows: workflows)
        tasks[0] = Task { [coordinator] in try await coordinator.run() }
    }

    /// Runs `keel ARGUMENTS --db <this stack's database>` to the end.
    public func keel(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let arguments = arguments + ["--db", databasePath]
        return try await runToEnd(KeelProcess.binary, arguments, environment: [:])
    }

    /// Stops the services and the mock; the namespace goes once the services ended (``BackgroundCleanups``).
    public func stop() {
        coordinator.stop()
        worker.stop()
        defaultWorker.stop()
        gpuWorker?.stop()
        client.close()
        mock.stop()
        BackgroundCleanups.remove(topology, from: url, after: tasks)
    }
}
