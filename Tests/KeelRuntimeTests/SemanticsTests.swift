import Foundation
import Keel
import KeelTestKit
import Testing

/// Books, then waits; on cancellation it runs the compensation as a durable activity.
struct BookWithCompensation: Workflow {
    static let name = "book-with-compensation"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let booked = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        do {
            try await context.sleep(for: .seconds(3600))
        } catch is CancelledError {
            _ = try await context.execute(StepActivity.self, input: .init(step: -1), options: stepOptions)
            throw CancelledError()
        }
        return booked
    }
}

struct Parent: Workflow {
    static let name = "parent"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let child = try await context.executeChild(TwelveSteps.self, input: input)
        do {
            _ = try await context.executeChild(FailingChild.self, id: "always-failing-child", input: 0)
        } catch let error as ChildWorkflowFailedError {
            return "\(child.last ?? ""),\(error.cause.type)"
        }
        return "unexpected"
    }
}

struct FailingChild: Workflow {
    static let name = "failing-child"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        throw ApplicationError(message: "the child gives up", type: "ChildGaveUp")
    }
}

/// Uses every deterministic source; replaying it must give the same values.
struct Deterministic: Workflow {
    static let name = "deterministic"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let before = "\(context.random(in: 0..<1_000_000))-\(context.uuid())-\(context.now.timeIntervalSince1970)"
        let effect = try context.sideEffect { UUID().uuidString }
        _ = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        return "\(before)|\(effect)|\(context.randomDouble())|\(context.now.timeIntervalSince1970)"
    }
}

/// Version 1 of an evolving workflow, and version 2 that adds a step behind `patched`.
struct EvolvingV1: Workflow {
    static let name = "evolving"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let first = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        try await context.sleep(for: .seconds(60))
        let last = try await context.execute(StepActivity.self, input: .init(step: 3), options: stepOptions)
        return first + "," + last
    }
}

struct EvolvingV2: Workflow {
    static let name = "evolving"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        let first = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        try await context.sleep(for: .seconds(60))
        var middle = ""
        if try context.patched("add-step-2") {
            middle = try await context.execute(StepActivity.self, input: .init(step: 2), options: stepOptions) + ","
        }
        let last = try await context.execute(StepActivity.self, input: .init(step: 3), options: stepOptions)
        return first + "," + middle + last
    }
}

/// Same name as EvolvingV1 but a changed, unguarded step order.
struct EvolvingBroken: Workflow {
    static let name = "evolving"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        _ = try await context.execute(StepActivity.self, input: .init(step: 1), options: stepOptions)
        _ = try await context.execute(StepActivity.self, input: .init(step: 9), options: stepOptions)
        return "broken"
    }
}

@Suite("Workflow semantics", .tags(.integration), .timeLimit(.minutes(2)))
struct SemanticsTests {
    static func engine(_ extra: [any Workflow.Type] = []) throws -> Engine {
        var workflows = testWorkflows
        for workflow in [BookWithCompensation.self, Parent.self, FailingChild.self, Deterministic.self, EvolvingV1.self]
            as [any Workflow.Type] + extra
        {
            workflows.register(workflow)
        }
        return try Engine(workflows: workflows)
    }

    @Test func theSameStartTwiceMakesOneRun() async throws {
        let engine = try Self.engine()
        let request = try StartRequest(TwelveSteps.self, id: "dup", input: 2)
        let first = try await engine.coordinator.start(request)
        let second = try await engine.coordinator.start(request)
        #expect(first.started && !second.started)
        #expect(first.runId == second.runId)
        try await engine.drain()
        // After it closed, the same request id still resolves to that run.
        let withId = try StartRequest(TwelveSteps.self, id: "dup2", input: 2, requestId: "job-17")
        let a = try await engine.coordinator.start(withId)
        try await engine.drain()
        let b = try await engine.coordinator.start(withId)
        #expect(a.runId == b.runId && !b.started)
        #expect(try engine.store.runs(status: nil, limit: 10).count == 2)
    }

    @Test func conflictPolicies() async throws {
        let engine = try Self.engine()
        let first = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "c", input: "x"))
        await #expect(throws: WorkflowAlreadyStartedError.self) {
            try await engine.coordinator.start(
                try StartRequest(SleepThenApprove.self, id: "c", input: "x", options: .init(idConflictPolicy: .fail)))
        }
        let replaced = try await engine.coordinator.start(
            try StartRequest(SleepThenApprove.self, id: "c", input: "y", options: .init(idConflictPolicy: .terminateExisting)))
        #expect(replaced.started && replaced.runId != first.runId)
        let old = try #require(try engine.store.run(runId: first.runId))
        #expect(old.status == .terminated)
        #expect(try engine.store.events(runId: first.runId).last?.kind == .workflowTerminated)
    }

    @Test func reusePolicies() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(TwelveSteps.self, id: "r", input: 1))
        try await engine.drain()
        await #expect(throws: WorkflowAlreadyStartedError.self) {
            try await engine.coordinator.start(
                try StartRequest(TwelveSteps.self, id: "r", input: 1, options: .init(idReusePolicy: .rejectDuplicate)))
        }
        await #expect(throws: WorkflowAlreadyStartedError.self) {
            try await engine.coordinator.start(
                try StartRequest(TwelveSteps.self, id: "r", input: 1, options: .init(idReusePolicy: .allowDuplicateFailedOnly)))
        }
        let again = try await engine.coordinator.start(try StartRequest(TwelveSteps.self, id: "r", input: 1))
        #expect(again.started)
    }

    /// A batch of starts (as the jobs queue delivers them) reads the committed runs once for all
    /// of them, and decides each as a start on its own would.
    @Test func aBatchOfStartsDecidesEachAsASingleStartWould() async throws {
        let engine = try Self.engine()
        let done = try await engine.coordinator.start(try StartRequest(TwelveSteps.self, id: "a", input: 1, requestId: "req-a"))
        try await engine.drain()
        let open = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "open", input: "x"))
        let results = try await engine.coordinator.start([
            try StartRequest(TwelveSteps.self, id: "other", input: 1, requestId: "req-a"),
            try StartRequest(TwelveSteps.self, id: "a", input: 1, options: .init(idReusePolicy: .rejectDuplicate)),
            try StartRequest(SleepThenApprove.self, id: "open", input: "y", options: .init(idConflictPolicy: .terminateExisting)),
            try StartRequest(SleepThenApprove.self, id: "open", input: "z"),
            try StartRequest(TwelveSteps.self, id: "fresh", input: 1, requestId: "req-fresh"),
            try StartRequest(TwelveSteps.self, id: "fresh-again", input: 1, requestId: "req-fresh")
        ])
        let sameRequest = try results[0].get()
        #expect(!sameRequest.started && sameRequest.runId == done.runId && sameRequest.workflowId == "a")
        #expect(throws: WorkflowAlreadyStartedError.self) { try results[1].get() }
        let replaced = try results[2].get()
        #expect(replaced.started && replaced.runId != open.runId)
        let existing = try results[3].get()
        #expect(!existing.started && existing.runId == replaced.runId)
        let fresh = try results[4].get()
        #expect(fresh.started)
        let again = try results[5].get()
        #expect(!again.started && again.runId == fresh.runId)
        #expect(try engine.store.run(runId: open.runId)?.status == .terminated)
        #expect(try engine.store.latestRun(workflowId: "fresh-again") == nil)
    }

    @Test func cancellationRunsTheCompensation() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(BookWithCompensation.self, id: "b", input: 0))
        try await engine.workers.drain(engine.coordinator)
        try await engine.coordinator.cancel(workflowId: "b")
        try await engine.drain()
        let run = try engine.latest("b")
        #expect(run.status == .cancelled)
        let kinds = try engine.events("b").map(\.kind)
        #expect(kinds.contains(.timerCancelled))
        #expect(engine.workers.executions(ofWorkflow: "b") == 2)
    }

    @Test func childWorkflowsReturnResultsAndFailures() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(Parent.self, id: "p", input: 3))
        try await engine.drain()
        let run = try engine.latest("p")
        #expect(run.result?.json == "\"step-3,ChildGaveUp\"")
        #expect(try engine.latest("p/child-1").status == .completed)
        #expect(try engine.latest("always-failing-child").status == .failed)
    }

    @Test func queriesAnswerFromLiveAndClosedRuns() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(SleepThenApprove.self, id: "q", input: "x"))
        try await engine.workers.drain(engine.coordinator)
        #expect(try await engine.coordinator.query(workflowId: "q", name: "status").json == "\"sleeping\"")
        let error = await #expect(throws: QueryError.self) { try await engine.coordinator.query(workflowId: "q", name: "nope") }
        #expect(error?.message.contains("it answers: status") == true)
        try await engine.coordinator.signal(workflowId: "q", name: "approve", input: try Payload(encoding: "early", field: "s"))
        try await engine.drain()
        #expect(try engine.latest("q").result?.json == "\"x:step-1:step-2:early\"")
        #expect(try await engine.coordinator.query(workflowId: "q", name: "status").json == "\"done\"")
    }

    @Test func deterministicValuesReplayIdentically() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(Deterministic.self, id: "d", input: 0))
        try await engine.workers.drain(engine.coordinator)
        let live = try #require(try engine.latest("d").result)
        let record = try engine.latest("d")
        let instance = WorkflowInstance(
            definition: WorkflowDefinition(Deterministic.self),
            info: WorkflowInfo(workflowId: "d", runId: record.runId, workflowType: Deterministic.name),
            randomSeed: record.randomSeed, startTime: record.createdAt)
        let activation = instance.replay(try engine.events("d"))
        #expect(activation.nondeterminism == nil)
        #expect(instance.outcome == .completeWorkflow(result: live))
    }

    @Test func patchedKeepsRunsPastThePatchPointOnTheirOldPath() async throws {
        let engine = try Self.engine()
        // "past": its history went beyond the patch point under version 1 (step 3 scheduled).
        _ = try await engine.coordinator.start(try StartRequest(EvolvingV1.self, id: "past", input: 0))
        try await engine.workers.drain(engine.coordinator)
        engine.clock.advance(by: 60)
        try await engine.coordinator.fireDueTimers()
        // "before": still sleeping, it reaches the patch point only after the deploy.
        _ = try await engine.coordinator.start(try StartRequest(EvolvingV1.self, id: "before", input: 0))
        try await engine.workers.drain(engine.coordinator)
        var v2 = WorkflowRegistry()
        v2.register(EvolvingV2.self)
        engine.coordinatorWorkflows = v2
        try await engine.restart()
        _ = try await engine.coordinator.start(try StartRequest(EvolvingV2.self, id: "new", input: 0))
        try await engine.drain()
        #expect(try engine.latest("past").result?.json == "\"step-1,step-3\"")
        #expect(try engine.latest("before").result?.json == "\"step-1,step-2,step-3\"")
        #expect(try engine.latest("new").result?.json == "\"step-1,step-2,step-3\"")
        #expect(try engine.events("new").contains { $0.kind == .markerRecorded && $0.name == "patch:add-step-2" })
        #expect(try engine.events("past").allSatisfy { $0.kind != .markerRecorded })
    }

    @Test func divergingCodeStopsOnlyThatRunAndFixedCodeResumesIt() async throws {
        let engine = try Self.engine()
        _ = try await engine.coordinator.start(try StartRequest(EvolvingV1.self, id: "e", input: 0))
        try await engine.workers.drain(engine.coordinator)
        var broken = testWorkflows
        broken.register(EvolvingBroken.self)
        engine.coordinatorWorkflows = broken
        try await engine.restart()
        let blocked = try engine.latest("e")
        #expect(blocked.status == .blocked)
        #expect(blocked.failure?.type == "NonDeterminism")
        #expect(blocked.failure?.message.contains("history records #5 timerStarted seq=2") == true)
        #expect(blocked.failure?.message.contains("the code issued activityScheduled seq=2 step") == true)
        let historyBefore = try engine.events("e")
        // Other workflows keep running.
        _ = try await engine.coordinator.start(try StartRequest(TwelveSteps.self, id: "other", input: 2))
        try await engine.drain()
        #expect(try engine.latest("other").status == .completed)
        #expect(try engine.events("e") == historyBefore, "history is never rewritten")
        // The original code comes back: the run continues.
        var fixed = testWorkflows
        fixed.register(EvolvingV1.self)
        engine.coordinatorWorkflows = fixed
        try await engine.restart()
        try await engine.drain()
        #expect(try engine.latest("e").status == .completed)
    }

    @Test func oversizedInputsAreRefusedWithTheFieldName() async throws {
        let engine = try Self.engine()
        let huge = String(repeating: "x", count: Payload.defaultSizeLimit + 1)
        let error = await #expect(throws: PayloadError.self) {
            try await engine.coordinator.start(
                StartRequest(workflowType: SleepThenApprove.name, workflowId: "big", input: Payload(data: Data(huge.utf8))))
        }
        #expect(error?.message.hasPrefix("input of workflow sleep-then-approve is 2097153 bytes") == true)
        #expect(try engine.store.latestRun(workflowId: "big") == nil)
    }

    @Test func unknownWorkflowTypesAreRefusedAtStart() async throws {
        let engine = try Self.engine()
        let error = await #expect(throws: UnknownTypeError.self) {
            try await engine.coordinator.start(StartRequest(workflowType: "nope", workflowId: "n", input: .null))
        }
        #expect(error?.message.contains("registered: ") == true)
    }
}
