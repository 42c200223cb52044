import Foundation
import Keel
import KeelTestKit
import Testing

/// Crashes the coordinator after every event position of a scenario and proves that the
/// restarted coordinator finishes the run with the same result and without running any
/// completed step again.
@Suite("Crash at every event position", .tags(.integration), .timeLimit(.minutes(5)))
struct CrashRecoveryTests {
    struct Scenario: Sendable {
        var request: StartRequest
        /// Signals the scenario sends once the workflow waits (again after a restart: delivered
        /// during the downtime, they reach the new coordinator).
        var signals: [(name: String, input: String)] = []
        /// The `status` query answer at which the signals are sent.
        var signalAtStatus: String?
        var expectedResult: String
        /// Executions per activity key suffix, for the activities that legitimately ran more than once.
        var expectedExecutions: Int
    }

    static func drive(_ engine: Engine, _ scenario: Scenario) async throws {
        _ = try await engine.coordinator.start(scenario.request)
        let workflowId = scenario.request.workflowId
        if let stage = scenario.signalAtStatus {
            let coordinator = engine.coordinator
            try await engine.workers.drain(coordinator, advancing: engine.clock) {
                try await coordinator.query(workflowId: workflowId, name: "status").json == "\"\(stage)\""
            }
        } else {
            try await engine.drain()
        }
        for signal in scenario.signals where try engine.latest(scenario.request.workflowId).status.isOpen {
            try await engine.coordinator.signal(
                workflowId: scenario.request.workflowId, name: signal.name,
                input: try Payload(encoding: signal.input, field: "signal"))
            try await engine.drain()
        }
    }

    static func totalEvents(_ engine: Engine) throws -> Int {
        try engine.store.runs(status: nil, limit: 1000).reduce(0) { $0 + Int($1.historyLength) }
    }

    static func check(_ scenario: Scenario, crashAfter: Int?) async throws -> Int {
        let engine = try Engine(crashAfterEvents: crashAfter)
        do {
            try await drive(engine, scenario)
        } catch is FaultInjectingStore.Crash {
            try await engine.restart()
            try await drive(engine, scenario)
        }
        let run = try engine.latest(scenario.request.workflowId)
        #expect(run.status == .completed, "crash after event \(crashAfter ?? 0): \(run.status) \(run.failure?.message ?? "")")
        #expect(run.result?.json == scenario.expectedResult, "crash after event \(crashAfter ?? 0)")
        #expect(
            engine.workers.executions(ofWorkflow: scenario.request.workflowId) == scenario.expectedExecutions,
            "crash after event \(crashAfter ?? 0): \(engine.workers.executionCounts)")
        return try totalEvents(engine)
    }

    @Test func anExhaustedStepIsDeadLetteredWhateverTheCrashPosition() async throws {
        let scenario = Scenario(
            request: try StartRequest(CatchExhausted.self, id: "exhausted", input: 0, requestId: "req-exhausted"),
            expectedResult: #""failed-after-2,step-2""#, expectedExecutions: 3)
        let total = try await Self.check(scenario, crashAfter: nil)
        #expect(total > 8)
        for position in [nil] + (0..<total).map(Optional.some) {
            let engine = try Engine(crashAfterEvents: position)
            do {
                try await Self.drive(engine, scenario)
            } catch is FaultInjectingStore.Crash {
                try await engine.restart()
                try await Self.drive(engine, scenario)
            }
            #expect(try engine.latest("exhausted").result?.json == scenario.expectedResult)
            let entries = engine.broker.deadLetters
            // At least once (a crash between publish and outbox delete republishes), always the same entry.
            #expect(!entries.isEmpty, "crash after event \(position ?? -1): no dead letter")
            #expect(Set(entries.map(\.id)).count == 1, "crash after event \(position ?? -1): \(entries.map(\.id))")
            let entry = try #require(entries.first)
            #expect(entry.activityType == "step" && entry.attempts.map(\.attempt) == [1, 2])
            #expect(entry.failure.retryState == .maximumAttemptsReached)
            #expect(entry.input.json.contains("\"succeedOnAttempt\":99"))
        }
    }

    static func sweep(_ scenario: Scenario) async throws {
        let total = try await check(scenario, crashAfter: nil)
        #expect(total > 5)
        for position in 0..<total {
            _ = try await check(scenario, crashAfter: position)
        }
    }

    @Test func twelveStepsWithStepSevenFailingTwice() async throws {
        let steps = (1...12).map { (step: Int) -> String in "\"step-\(step)\"" }.joined(separator: ",")
        try await Self.sweep(
            Scenario(
                request: try StartRequest(TwelveSteps.self, id: "twelve", input: 12, requestId: "req-twelve"),
                expectedResult: "[\(steps)]", expectedExecutions: 14))
    }

    @Test func parallelBranches() async throws {
        try await Self.sweep(
            Scenario(
                request: try StartRequest(FanOut.self, id: "fan", input: 4, requestId: "req-fan"),
                expectedResult: #"["step-100","step-200","step-1","step-2","step-3","step-4"]"#,
                expectedExecutions: 7))
    }

    @Test func timersAndSignalsArrivingDuringDowntime() async throws {
        try await Self.sweep(
            Scenario(
                request: try StartRequest(SleepThenApprove.self, id: "approve", input: "doc", requestId: "req-approve"),
                signals: [("approve", "ana")], signalAtStatus: "awaiting approval",
                expectedResult: #""doc:step-1:step-2:ana""#, expectedExecutions: 2))
    }

    @Test func continueAsNew() async throws {
        try await Self.sweep(
            Scenario(
                request: try StartRequest(CountWithContinueAsNew.self, id: "count", input: 1, requestId: "req-count"),
                expectedResult: "3", expectedExecutions: 3))
    }
}

extension Tag {
    @Tag static var unit: Self
    @Tag static var integration: Self
}
