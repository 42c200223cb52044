import Foundation
import Keel
import KeelTestKit
import Testing

/// A workflow running one activity with options from its input, returning the result or the failure type.
struct OneActivity: Workflow {
    static let name = "one-activity"
    struct Input: Codable, Sendable {
        var options: ActivityOptions
        var activity: String = "step"
    }
    func run(context: WorkflowContext, input: Input) async throws -> String {
        do {
            let result = try await context.execute(
                activityType: input.activity, input: StepActivity.Input(step: 1), options: input.options)
            return try result.decode(String.self)
        } catch let error as ActivityFailedError {
            return
                "failed:\(error.cause.type):\(error.cause.timeoutKind?.rawValue ?? "-"):\(error.cause.retryState?.rawValue ?? "-"):\(error.attempts)"
        }
    }
}

/// Fails every time.
struct FailingActivity: Activity {
    static let name = "failing"
    func run(context: ActivityContext, input: StepActivity.Input) async throws -> String {
        throw ApplicationError(message: "nope", type: "Rejected")
    }
}

@Suite("Timeouts and retries against a manual clock", .tags(.integration), .timeLimit(.minutes(2)))
struct TimeoutTests {
    static func engine() throws -> Engine {
        var workflows = testWorkflows
        workflows.register(OneActivity.self)
        var activities = testActivities
        activities.register(FailingActivity())
        return try Engine(workflows: workflows, activities: activities)
    }

    static func start(_ engine: Engine, _ options: ActivityOptions, activity: String = "step", id: String = "t") async throws {
        _ = try await engine.coordinator.start(
            try StartRequest(OneActivity.self, id: id, input: .init(options: options, activity: activity)))
    }

    /// Takes the task off the queue and reports only that it started: the worker then dies silently.
    static func startAndDie(_ engine: Engine) async throws -> ActivityTask {
        let task = try #require(engine.broker.take())
        try await engine.coordinator.activityStarted(
            ActivityStarted(runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: "doomed", time: Date())
        )
        return task
    }

    @Test func startToCloseTimesOutTheAttemptAndRetries() async throws {
        let engine = try Self.engine()
        try await Self.start(
            engine, ActivityOptions(startToCloseTimeout: .seconds(30), retryPolicy: RetryPolicy(initialInterval: .seconds(2))))
        let first = try await Self.startAndDie(engine)
        engine.clock.advance(by: 29.9)
        #expect(try await engine.coordinator.fireDueTimers() == 0)
        engine.clock.advance(by: 0.1)
        #expect(try await engine.coordinator.fireDueTimers() == 1)
        // The dead worker's late result is stale: ignored.
        #expect(
            try await engine.coordinator.activityResult(
                ActivityResult(
                    runId: first.runId, activityId: first.activityId, attempt: 1, worker: "doomed",
                    outcome: .completed(Payload(encoding: "late", field: "r")))) == false)
        try await engine.drain()
        let run = try engine.latest("t")
        #expect(run.result?.json == "\"step-1\"")
        let timedOut = try #require(try engine.events("t").first { $0.kind == .activityTimedOut })
        #expect(timedOut.failure?.timeoutKind == .startToClose)
        #expect(timedOut.failure?.retryState == .willRetry)
        #expect(timedOut.attempt == 1)
        let started = try engine.events("t").filter { $0.kind == .activityStarted }.map(\.attempt)
        #expect(started == [1, 2])
    }

    @Test func heartbeatTimeoutCatchesASilentWorkerBeforeStartToClose() async throws {
        let engine = try Self.engine()
        try await Self.start(
            engine,
            ActivityOptions(
                startToCloseTimeout: .seconds(600), heartbeatTimeout: .seconds(10), retryPolicy: RetryPolicy(maximumAttempts: 1)))
        let task = try await Self.startAndDie(engine)
        engine.clock.advance(by: 8)
        try await engine.coordinator.activityHeartbeat(
            ActivityHeartbeat(
                runId: task.runId, activityId: task.activityId, attempt: 1, details: try Payload(encoding: 42, field: "d")))
        engine.clock.advance(by: 8)
        #expect(try await engine.coordinator.fireDueTimers() == 0, "the heartbeat pushed the deadline")
        engine.clock.advance(by: 2)
        #expect(try await engine.coordinator.fireDueTimers() == 1)
        try await engine.drain()
        #expect(try engine.latest("t").result?.json == "\"failed:Timeout:heartbeat:maximumAttemptsReached:1\"")
    }

    @Test func lastHeartbeatDetailsReachTheNextAttempt() async throws {
        let engine = try Self.engine()
        try await Self.start(
            engine,
            ActivityOptions(
                startToCloseTimeout: .seconds(60), heartbeatTimeout: .seconds(10),
                retryPolicy: RetryPolicy(initialInterval: .seconds(1))))
        let task = try await Self.startAndDie(engine)
        try await engine.coordinator.activityHeartbeat(
            ActivityHeartbeat(
                runId: task.runId, activityId: task.activityId, attempt: 1,
                details: try Payload(encoding: ["page": 17], field: "d")))
        engine.clock.advance(by: 10)
        try await engine.coordinator.fireDueTimers()
        engine.clock.advance(by: 1)
        try await engine.coordinator.fireDueTimers()
        let retry = try #require(engine.broker.take())
        #expect(retry.attempt == 2)
        #expect(try retry.heartbeatDetails?.decode([String: Int].self) == ["page": 17])
    }

    @Test func scheduleToStartIsNotRetried() async throws {
        let engine = try Self.engine()
        try await Self.start(engine, ActivityOptions(scheduleToStartTimeout: .seconds(5), startToCloseTimeout: .seconds(30)))
        _ = engine.broker.take()  // nobody ever starts it
        engine.clock.advance(by: 5)
        try await engine.drain()
        #expect(try engine.latest("t").result?.json == "\"failed:Timeout:scheduleToStart:timeout:1\"")
    }

    @Test func scheduleToCloseBoundsAllAttempts() async throws {
        let engine = try Self.engine()
        try await Self.start(
            engine,
            ActivityOptions(
                scheduleToCloseTimeout: .seconds(20),
                retryPolicy: RetryPolicy(initialInterval: .seconds(1), backoffCoefficient: 1)), activity: "failing")
        try await engine.drain()
        let run = try engine.latest("t")
        // Attempts at t=0,1,...; a retry that would start at or after t=20 is not made.
        #expect(run.result?.json == "\"failed:Rejected:-:timeout:20\"")
        #expect(try engine.events("t").filter { $0.kind == .activityFailed }.count == 20)
    }

    @Test func scheduleToCloseTimerEndsAHungAttempt() async throws {
        let engine = try Self.engine()
        try await Self.start(engine, ActivityOptions(scheduleToCloseTimeout: .seconds(20)))
        _ = try await Self.startAndDie(engine)
        engine.clock.advance(by: 20)
        try await engine.drain()
        #expect(try engine.latest("t").result?.json == "\"failed:Timeout:scheduleToClose:timeout:1\"")
    }

    @Test func retryAfterSetsTheNextAttemptTime() async throws {
        let engine2 = try Self.engine()
        _ = try await engine2.coordinator.start(try StartRequest(RateLimited.self, id: "r", input: 0))
        try await engine2.workers.drain(engine2.coordinator)
        let failed = try #require(try engine2.events("r").first { $0.kind == .activityFailed })
        #expect(failed.failure?.retryState == .willRetry)
        #expect(failed.failure?.nextAttemptAt == failed.time.addingTimeInterval(7))
        engine2.clock.advance(by: 6.9)
        #expect(try await engine2.coordinator.fireDueTimers() == 0)
        engine2.clock.advance(by: 0.1)
        #expect(try await engine2.coordinator.fireDueTimers() == 1)
    }

    @Test func nonRetryableTypesRunOnce() async throws {
        let engine = try Self.engine()
        try await Self.start(
            engine,
            ActivityOptions(startToCloseTimeout: .seconds(30), retryPolicy: RetryPolicy(nonRetryableErrorTypes: ["Rejected"])),
            activity: "failing")
        try await engine.drain()
        #expect(try engine.latest("t").result?.json == "\"failed:Rejected:-:nonRetryableFailure:1\"")
        #expect(engine.workers.executions(ofWorkflow: "t") == 1)
    }

    @Test func unknownActivityTypeFailsWithoutRetrying() async throws {
        let engine = try Self.engine()
        try await Self.start(engine, ActivityOptions(startToCloseTimeout: .seconds(30)), activity: "no-such-activity")
        try await engine.drain()
        #expect(try engine.latest("t").result?.json == "\"failed:UnknownActivityType:-:nonRetryableFailure:1\"")
    }

    @Test func missingTimeoutsFailTheWorkflowWithAClearMessage() async throws {
        let engine = try Self.engine()
        try await Self.start(engine, ActivityOptions(taskQueue: "llm"))
        try await engine.drain()
        let run = try engine.latest("t")
        #expect(run.status == .failed)
        #expect(run.failure?.type == "InvalidOptions")
        #expect(run.failure?.message.contains("needs startToCloseTimeout or scheduleToCloseTimeout") == true)
    }

    @Test func workflowExecutionTimeout() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(
            try StartRequest(SleepThenApprove.self, id: "w", input: "x", options: WorkflowOptions(executionTimeout: .seconds(60)))
        )
        try await engine.drain()
        let run = try engine.latest("w")
        #expect(run.status == .timedOut)
        #expect(run.closedAt == run.createdAt.addingTimeInterval(60))
    }

    @Test func overdueTimersFireOnceAfterARestart() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "s", input: "x"))
        try await engine.workers.drain(engine.coordinator)
        engine.clock.advance(by: 7200)  // the one-hour sleep is overdue while "down"
        try await engine.restart()
        #expect(try await engine.coordinator.fireDueTimers() == 1)
        #expect(try await engine.coordinator.fireDueTimers() == 0)
        #expect(try engine.events("s").filter { $0.kind == .timerFired }.count == 1)
    }
}

/// Fails with Retry-After 7 s once, then succeeds.
struct RateLimited: Workflow {
    static let name = "rate-limited"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        try await context.execute(
            FlakyRateLimit.self, input: input,
            options: ActivityOptions(
                startToCloseTimeout: .seconds(30),
                retryPolicy: RetryPolicy(initialInterval: .seconds(1), maximumInterval: .seconds(2))))
    }
}

struct FlakyRateLimit: Activity {
    static let name = "flaky-rate-limit"
    func run(context: ActivityContext, input: Int) async throws -> String {
        if context.attempt == 1 { throw ApplicationError(message: "429", type: "LLMRateLimited", nextRetryDelay: .seconds(7)) }
        return "ok"
    }
}

@Suite("Stall detection against a manual clock", .tags(.integration), .timeLimit(.minutes(1)))
struct OverdueTimerTests {
    @Test func aTimerLongOverdueFlagsItsRun() async throws {
        let engine = try Engine()
        _ = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "sleepy", input: "doc"))
        // The first activity runs; the run then sleeps an hour on a durable timer.
        try await engine.workers.drain(engine.coordinator)
        #expect(try engine.latest("sleepy").status == .running)
        engine.clock.advance(by: 3600 + 200)
        #expect(try await engine.coordinator.checkStalls(threshold: 300).all.isEmpty, "due 200 s ago: not yet overdue")
        engine.clock.advance(by: 200)
        let (all, new) = try await engine.coordinator.checkStalls(threshold: 300)
        #expect(all.map(\.workflowId) == ["sleepy"])
        #expect(new.count == 1)
        #expect(all.first?.reason == "timer #2 was due 400 s ago and has not fired")
        // Once it fires, the run is no longer stalled.
        #expect(try await engine.coordinator.fireDueTimers() == 1)
        #expect(try await engine.coordinator.checkStalls(threshold: 300).all.isEmpty)
    }

    @Test func aWorkerThatHangsWithoutHeartbeatsFlagsItsRun() async throws {
        let engine = try TimeoutTests.engine()
        try await TimeoutTests.start(engine, ActivityOptions(startToCloseTimeout: .seconds(3600)), id: "hung")
        // A worker takes the task, reports the start, then neither heartbeats nor finishes.
        _ = try await TimeoutTests.startAndDie(engine)
        engine.clock.advance(by: 299)
        #expect(try await engine.coordinator.checkStalls(threshold: 300).all.isEmpty)
        engine.clock.advance(by: 2)
        let (all, new) = try await engine.coordinator.checkStalls(threshold: 300)
        #expect(all.map(\.workflowId) == ["hung"])
        #expect(new.map(\.workflowId) == ["hung"])
        #expect(all.first?.reason == "activity step#1 (attempt 1) has neither heartbeated nor finished for 301 s")
        // Still stalled on the next check, but not new; the store lists it for `keel list --status stalled`.
        let again = try await engine.coordinator.checkStalls(threshold: 300)
        #expect(again.all.count == 1 && again.new.isEmpty)
        #expect(try engine.store.stalledRuns().map(\.workflowId) == ["hung"])
        // …and the console's run page finds it by run id.
        let files = try SQLiteHistoryStore(path: engine.databasePath)
        let runId = try #require(all.first?.runId)
        #expect(try files.stalledRun(runId: runId)?.reason == all.first?.reason)
        #expect(try files.stalledRun(runId: "no-such-run") == nil)
    }
}
