import Foundation
import Testing

@testable import KeelCore

struct Echo: Activity {
    static let name = "echo"
    func run(context: ActivityContext, input: String) async throws -> String { input }
}

let quick = ActivityOptions(startToCloseTimeout: .seconds(10))

struct Sequential: Workflow {
    static let name = "sequential"
    func run(context: WorkflowContext, input: Int) async throws -> [String] {
        var out: [String] = []
        for step in 1...input {
            out.append(try await context.execute(Echo.self, input: "s\(step)", options: quick))
        }
        return out
    }
}

struct Parallel: Workflow {
    static let name = "parallel"
    func run(context: WorkflowContext, input: Int) async throws -> String {
        async let a = context.execute(Echo.self, input: "a", options: quick)
        async let b = context.execute(Echo.self, input: "b", options: quick)
        let grouped = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<input {
                group.addTask { try await context.execute(Echo.self, input: "g\(index)", options: quick) }
            }
            var all: [String] = []
            for try await value in group { all.append(value) }
            return all.sorted().joined()
        }
        return try await a + b + grouped
    }
}

/// Plays the coordinator's part by hand: records commands as events, completes activities
/// with their input as result, in the order given by `pick`.
struct Harness {
    var events: [HistoryEvent] = []
    var time = Date(timeIntervalSince1970: 1_700_000_000)

    mutating func append(_ event: HistoryEvent) -> HistoryEvent {
        var event = event
        event.id = Int64(events.count + 1)
        event.time = time
        events.append(event)
        return event
    }

    mutating func record(_ commands: [Command]) {
        for command in commands { _ = append(command.event(id: 0, time: time)) }
    }

    var openActivities: [HistoryEvent] {
        let done = Set(events.filter { $0.kind == .activityCompleted }.compactMap(\.ref))
        return events.filter { $0.kind == .activityScheduled && !done.contains($0.ref!) }
    }

    static func instance(_ definition: WorkflowDefinition, id: String = "wf-1") -> WorkflowInstance {
        WorkflowInstance(
            definition: definition,
            info: WorkflowInfo(workflowId: id, runId: "run-1", workflowType: definition.name),
            randomSeed: 42, startTime: Date(timeIntervalSince1970: 1_700_000_000))
    }

    /// Runs a workflow to its end live, completing activities in `order` (index into open ones).
    mutating func runLive(
        _ definition: WorkflowDefinition, input: some Encodable, pickLast: Bool = false
    ) throws -> WorkflowInstance {
        let instance = Harness.instance(definition)
        let start = append(
            HistoryEvent(id: 0, time: time, kind: .workflowStarted, payload: try Payload(encoding: input, field: "input")))
        var activation = instance.apply(start)
        while true {
            #expect(activation.nondeterminism == nil)
            record(activation.commands)
            if instance.outcome != nil { return instance }
            let open = openActivities
            guard let next = pickLast ? open.last : open.first else {
                Issue.record("stuck")
                return instance
            }
            time += 1
            let done = append(
                HistoryEvent(id: 0, time: time, kind: .activityCompleted, ref: next.ref, attempt: 1, payload: next.payload))
            activation = instance.apply(done)
        }
    }
}

@Suite("WorkflowInstance", .tags(.unit))
struct WorkflowInstanceTests {
    @Test func sequentialRunsStepByStepAndReplaysWithoutNewCommands() throws {
        var harness = Harness()
        let live = try harness.runLive(WorkflowDefinition(Sequential.self), input: 5)
        guard case .completeWorkflow(let result) = live.outcome else {
            Issue.record("not completed")
            return
        }
        #expect(try result.decode([String].self) == ["s1", "s2", "s3", "s4", "s5"])
        #expect(harness.events.filter { $0.kind == .activityScheduled }.count == 5)

        let replayed = Harness.instance(WorkflowDefinition(Sequential.self))
        let activation = replayed.replay(harness.events)
        #expect(activation.nondeterminism == nil)
        #expect(activation.commands.isEmpty)
        #expect(replayed.outcome == live.outcome)
    }

    @Test func parallelBranchesReplayInTheSameOrder() throws {
        for pickLast in [false, true] {
            var harness = Harness()
            let live = try harness.runLive(WorkflowDefinition(Parallel.self), input: 4, pickLast: pickLast)
            guard case .completeWorkflow(let result) = live.outcome else {
                Issue.record("not completed")
                return
            }
            #expect(try result.decode(String.self) == "abg0g1g2g3")
            for _ in 0..<3 {
                let replayed = Harness.instance(WorkflowDefinition(Parallel.self))
                let activation = replayed.replay(harness.events)
                #expect(activation.nondeterminism == nil)
                #expect(replayed.outcome == live.outcome)
            }
        }
    }

    @Test func divergingCodeIsReportedWithBothCommands() throws {
        var harness = Harness()
        _ = try harness.runLive(WorkflowDefinition(Sequential.self), input: 3)
        // Same name, different code: the history says "echo", the code now runs "other".
        struct Changed: Workflow {
            static let name = "sequential"
            func run(context: WorkflowContext, input: Int) async throws -> [String] {
                _ = try await context.execute(Echo.self, input: "s1", options: quick)
                _ = try await context.execute(activityType: "other", input: "x", options: quick)
                return []
            }
        }
        let replayed = Harness.instance(WorkflowDefinition(Changed.self))
        let activation = replayed.replay(harness.events)
        let error = try #require(activation.nondeterminism)
        #expect(error.eventId == 4)
        #expect(error.recorded.contains("activityScheduled seq=2 echo"))
        #expect(error.issued.contains("activityScheduled seq=2 other"))
        replayed.evict()
    }
}

extension Tag {
    @Tag static var unit: Self
    @Tag static var integration: Self
}
