import Foundation
import Keel
import KeelTestKit
import Testing

/// A task the coordinator publishes again from its outbox is marked `republished`; a worker
/// claims it before running it, and only one worker's claim on an attempt is granted.
@Suite("Claims of republished tasks")
struct ClaimTests {
    /// Worker `worker`'s claim (one claim per worker here: its id is the worker's name).
    private func claim(_ task: ActivityTask, by worker: String) -> Coordinator.WorkerReport {
        .claim(
            ActivityClaim(runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: worker, claimId: worker))
    }

    /// A started one-activity run whose task was taken off the queue, then found in the outbox
    /// again (as after a crash between its publish and the deletion of its outbox row) and
    /// republished.
    private func republished() async throws -> (Engine, original: ActivityTask, copy: ActivityTask) {
        let engine = try TimeoutTests.engine()
        try await TimeoutTests.start(engine, ActivityOptions(startToCloseTimeout: .seconds(30)), id: "claimed")
        let original = try #require(engine.broker.take())
        #expect(original.republished == nil)
        // Its confirmed row goes first (it waits for the next commit otherwise, and the
        // coordinator would not publish it again meanwhile).
        await engine.coordinator.deleteConfirmedOutbox()
        var batch = StoreBatch()
        batch.outbox = [original]
        try engine.store.commit(batch)
        #expect(try await engine.coordinator.flushOutbox() == 1)
        let copy = try #require(engine.broker.take())
        return (engine, original, copy)
    }

    @Test func aRepublishedTaskIsMarkedAndOnlyTheFirstClaimIsGranted() async throws {
        let (engine, original, copy) = try await republished()
        #expect(copy.republished == true)
        #expect(copy.attemptKey == original.attemptKey)
        #expect(try await engine.coordinator.commit([claim(copy, by: "b")]).applied == [true])
        #expect(try await engine.coordinator.commit([claim(copy, by: "c")]).applied == [false])
        #expect(try await engine.coordinator.commit([claim(copy, by: "b")]).applied == [true], "asked again after a lost answer")
        let starts = try engine.store.events(runId: original.runId).filter { $0.kind == .activityStarted }
        #expect(starts.map(\.name) == ["b"], "the granted claim is the attempt's start")
    }

    @Test func aClaimAfterTheOriginalStartedIsRefused() async throws {
        let (engine, original, copy) = try await republished()
        try await engine.coordinator.activityStarted(
            ActivityStarted(
                runId: original.runId, activityId: original.activityId, attempt: 1, worker: "a", time: Date()))
        #expect(try await engine.coordinator.commit([claim(copy, by: "b")]).applied == [false])
        // Refused to the worker that runs the other copy too: its claim is not what started it.
        #expect(try await engine.coordinator.commit([claim(copy, by: "a")]).applied == [false])
        // The original's result completes the activity; a claim for the ended attempt is refused too.
        try await engine.coordinator.activityResult(
            ActivityResult(
                runId: original.runId, activityId: original.activityId, attempt: 1, worker: "a",
                outcome: .completed(try Payload(encoding: "done", field: "result"))))
        #expect(try await engine.coordinator.commit([claim(copy, by: "c")]).applied == [false])
    }

    /// A task handed back by its worker, reported in a message RabbitMQ delivered a second time:
    /// a coordinator that stopped before committing that report may have sent the attempt's task
    /// already (docs/architecture.md, "The next task goes out while the step is committed").
    private func handedBackAgain() async throws -> (Engine, ActivityTask) {
        let engine = try TimeoutTests.engine()
        try await TimeoutTests.start(engine, ActivityOptions(startToCloseTimeout: .seconds(30)), id: "held")
        let original = try #require(engine.broker.take())
        let report = Coordinator.WorkerReport.redelivered(
            ActivityRedelivered(
                runId: original.runId, activityId: original.activityId, attempt: original.attempt, worker: "a",
                handedBack: true))
        let (outgoing, applied) = try await engine.coordinator.commit([report], redelivered: true)
        #expect(applied == [true])
        #expect(await engine.coordinator.send(outgoing).settle())
        #expect(engine.broker.take() == nil, "held, not sent with the commit")
        return (engine, original)
    }

    @Test func aTaskDecidedFromARedeliveredReportIsHeldThenSentToBeClaimed() async throws {
        let (engine, original) = try await handedBackAgain()
        let copy = try await sentOnceDue(engine, original)
        #expect(copy.claimBeforeRunning == true)
    }

    /// Checks that `original`'s copy is held, then sent marked `republished` once
    /// ``Coordinator/redeliveredTaskDelay`` passed; returns it.
    private func sentOnceDue(_ engine: Engine, _ original: ActivityTask) async throws -> ActivityTask {
        #expect(try await engine.coordinator.flushOutbox() == 0, "still held")
        engine.clock.advance(by: Coordinator.redeliveredTaskDelay + 0.1)
        #expect(try await engine.coordinator.flushOutbox() == 1)
        let copy = try #require(engine.broker.take())
        #expect(copy.attemptKey == original.attemptKey)
        #expect(copy.republished == true)
        return copy
    }

    @Test func aHeldTaskWhoseFirstCopyReportedItsStartIsNeverSent() async throws {
        let (engine, original) = try await handedBackAgain()
        try await engine.coordinator.activityStarted(
            ActivityStarted(
                runId: original.runId, activityId: original.activityId, attempt: 1, worker: "a", time: Date()))
        engine.clock.advance(by: Coordinator.redeliveredTaskDelay + 0.1)
        #expect(try await engine.coordinator.flushOutbox() == 0)
        #expect(engine.broker.take() == nil)
        #expect(try engine.store.outbox(skipping: []).isEmpty, "its outbox row is gone")
    }

    /// After a restart, the copy of a task still in the outbox waits before it goes out: its
    /// first copy may run on a worker that reports the start only after 250 ms, and a second
    /// copy's claim must not be granted before that start arrives.
    @Test func aTaskInTheOutboxAtRecoveryIsHeldThenSentToBeClaimed() async throws {
        let engine = try TimeoutTests.engine()
        try await TimeoutTests.start(engine, ActivityOptions(startToCloseTimeout: .seconds(30)), id: "recovered")
        let original = try #require(engine.broker.take())
        await engine.coordinator.deleteConfirmedOutbox()
        var batch = StoreBatch()
        batch.outbox = [original]
        try engine.store.commit(batch)
        try await engine.restart()
        #expect(engine.broker.take() == nil, "not sent at recovery")
        _ = try await sentOnceDue(engine, original)
    }
}
