import Foundation
import Keel
import KeelTestKit

/// Returns "step-N"; fails (retryably) while its attempt is below `succeedOnAttempt`.
struct StepActivity: Activity {
    static let name = "step"
    struct Input: Codable, Sendable {
        var step: Int
        var succeedOnAttempt: Int = 1
    }
    func run(context: ActivityContext, input: Input) async throws -> String {
        if context.attempt < input.succeedOnAttempt {
            throw ApplicationError(message: "step \(input.step) attempt \(context.attempt) failed", type: "StepFlaked")
        }
        return "step-\(input.step)"
    }
}

let stepOptions = ActivityOptions(
    startToCloseTimeout: .seconds(30),
    retryPolicy: RetryPolicy(initialInterval: .seconds(1), maximumAttempts: 5))

/// The "step 7 of 12 fails" story: twelve sequential steps, the seventh fails twice first.
struct TwelveSteps: Workflow {
    static let name = "twelve-steps"
    func run(context: WorkflowContext, input: Int) async throws -> [String] {
        var results: [String] = []
        for step in 1...input {
            results.append(
                try await context.execute(
                    StepActivity.self, input: .init(step: step, succeedOnAttempt: step == 7 ? 3 : 1), options: stepOptions))
        }
        return results
    }
}

/// Step 1 never succeeds within its 2 attempts; the workflow records that and goes on with step 2.
struct CatchExhausted: Workflow {
    static let name = "catch-exhausted"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let options = ActivityOptions(
            startToCloseTimeout: .seconds(30), retryPolicy: RetryPolicy(initialInterval: .seconds(1), maximumAttempts: 2))
        var outcome: String
        do {
            outcome = try await context.execute(StepActivity.self, input: .init(step: 1, succeedOnAttempt: 99), options: options)
        } catch let error as ActivityFailedError {
            outcome = "failed-after-\(error.attempts)"
        }
        let next = try await context.execute(StepActivity.self, input: .init(step: 2), options: stepOptions)
        return "\(outcome),\(next)"
    }
}

/// Two `async let` branches and a task group.
struct FanOut: Workflow {
    static let name = "fan-out"
    func run(context: WorkflowContext, input: Int) async throws -> [String] {
        async let first = context.execute(StepActivity.self, input: .init(step: 100), options: stepOptions)
        async let second = context.execute(StepActivity.self, input: .init(step: 200, succeedOnAttempt: 2), options: stepOptions)
        let grouped = try await withThrowingTaskGroup(of: String.self) { group in
            for step in 1...input {
                group.addTask { try await context.execute(StepActivity.self, input: .init(step: step), options: stepOptions) }
            }
            var all: [String] = []
            for try await value in group { all.append(value) }
            return all.sorted()
        }
        return try await [first, second] + grouped
    }
}

/// A durable sleep, then waits for an `approve` signal, answering a `status` query throughout.
final class SleepThenApprove: Workflow {
    static let name = "sleep-then-approve"
    var stage = "starting"
    var approvedBy: String?

    required init() {}

    func run(context: WorkflowContext, input: String) async throws -> String {
        context.onQuery("status") { self.stage }
        context.onSignal("approve", as: String.self) { self.approvedBy = $0 }
        stage = "drafting"
        let draft = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        stage = "sleeping"
        try await context.sleep(for: .seconds(3600))
        stage = "awaiting approval"
        guard try await context.condition(timeout: .seconds(86_400), { self.approvedBy != nil }) else {
            stage = "expired"
            return "expired"
        }
        stage = "publishing"
        let published = try await context.execute(StepActivity.self, input: .init(step: 2), options: stepOptions)
        stage = "done"
        return "\(input):\(draft):\(published):\(approvedBy ?? "")"
    }
}

/// Counts to 3 over three runs with continue-as-new, one activity per run.
struct CountWithContinueAsNew: Workflow {
    static let name = "count-continue-as-new"
    func run(context: WorkflowContext, input: Int) async throws -> Int {
        _ = try await context.execute(StepActivity.self, input: .init(step: input), options: stepOptions)
        if input < 3 { try context.continueAsNew(input: input + 1) }
        return input
    }
}

let testWorkflows: WorkflowRegistry = {
    var registry = WorkflowRegistry()
    registry.register(TwelveSteps.self)
    registry.register(FanOut.self)
    registry.register(SleepThenApprove.self)
    registry.register(CountWithContinueAsNew.self)
    registry.register(RateLimited.self)
    registry.register(CatchExhausted.self)
    return registry
}()

let testActivities: ActivityRegistry = {
    var registry = ActivityRegistry()
    registry.register(StepActivity())
    registry.register(FlakyRateLimit())
    return registry
}()

/// A coordinator over a real SQLite file, an in-memory broker, in-process workers and a manual clock.
final class Engine: @unchecked Sendable {
    let directory = makeTemporaryDirectory()
    let clock = ManualClock()
    let broker = InMemoryBroker()
    let workers: InProcessWorkers
    var coordinator: Coordinator
    var store: any HistoryStore
    let workflows: WorkflowRegistry
    /// The workflow code the next ``restart()`` deploys.
    var coordinatorWorkflows: WorkflowRegistry

    var databasePath: String { directory.appendingPathComponent("keel.sqlite").path }

    init(
        workflows: WorkflowRegistry = testWorkflows, activities: ActivityRegistry = testActivities, crashAfterEvents: Int? = nil
    ) throws {
        self.workflows = workflows
        self.coordinatorWorkflows = workflows
        workers = InProcessWorkers(broker: broker, activities: activities)
        let base = try SQLiteHistoryStore(path: directory.appendingPathComponent("keel.sqlite").path)
        store = crashAfterEvents.map { FaultInjectingStore(base, crashAfterEvents: $0) } ?? base
        coordinator = Coordinator(store: store, workflows: workflows, publisher: broker, clock: clock)
    }

    /// Drops the coordinator's memory as a killed process would and starts a new one on the same file.
    func restart() async throws {
        await coordinator.shutdown()
        store = try SQLiteHistoryStore(path: databasePath)
        coordinator = Coordinator(store: store, workflows: coordinatorWorkflows, publisher: broker, clock: clock)
        try await coordinator.recover()
    }

    func drain() async throws {
        try await workers.drain(coordinator, advancing: clock)
    }

    func latest(_ workflowId: String) throws -> RunRecord {
        guard let run = try store.latestRun(workflowId: workflowId) else {
            throw WorkflowNotFoundError(workflowId: workflowId, detail: "none")
        }
        return run
    }

    func events(_ workflowId: String) throws -> [HistoryEvent] {
        try store.events(runId: try latest(workflowId).runId)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}
