import Foundation
import Keel
import Starter

// A coordinator and workers for `default` and `llm` in one process, for trying things out; in
// production run them as separate processes (and scale the workers per queue).
let environment = ProcessInfo.processInfo.environment
let url = try AMQPURL.fromEnvironment()
let llm = try LLMConfiguration.resolve(path: nil, environment: environment) ?? LLMConfiguration(providers: [])
var coordinatorConfiguration = CoordinatorService.Configuration(
    url: url, databasePath: environment["KEEL_DB"] ?? "starter.sqlite")
coordinatorConfiguration.coordinator.providerChain = llm.chain
let coordinator = CoordinatorService(configuration: coordinatorConfiguration, workflows: Starter.workflows)
let workers = ["default", "llm"].map { queue in
    WorkerService(configuration: .init(url: url, taskQueue: queue, concurrency: 8), activities: Starter.activities(llm: llm))
}
try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await coordinator.run() }
    for worker in workers { group.addTask { try await worker.run() } }
    try await group.waitForAll()
}
