import Foundation
import Keel
import KeelInMemory
import KeelTestKit
import Synchronization
import Testing

/// The in-memory broker, turning publishes down while `refusing` is set (as a broker that
/// dropped the connection would), and leaving their confirms to the test while `holding` is.
private final class RefusingBroker: TaskPublisher {
    struct Refused: Error {}
    let broker = InMemoryBroker()
    let refusing = Mutex(false)
    let holding = Mutex(false)
    /// The confirmations of the publishes held, for the test to settle.
    let held = Mutex([PublishConfirmation]())

    func publish(_ tasks: [ActivityTask]) async throws {
        if refusing.withLock({ $0 }) { throw Refused() }
        try await broker.publish(tasks)
    }

    func send(_ tasks: [ActivityTask]) async throws -> PublishConfirmation {
        guard holding.withLock({ $0 }) else {
            try await publish(tasks)
            return PublishConfirmation(settled: nil)
        }
        try await broker.publish(tasks)
        let confirmation = PublishConfirmation()
        held.withLock { $0.append(confirmation) }
        return confirmation
    }

    func deadLetter(_ entries: [DeadLetterEntry]) async throws { try await broker.deadLetter(entries) }
    func cancel(_ attempts: [ActivityCancel]) async throws { try await broker.cancel(attempts) }
}

/// A task's outbox row goes once RabbitMQ confirmed the task, with the coordinator's next commit
/// (or the timers' loop) instead of a transaction of its own.
@Suite("Confirmed outbox rows", .tags(.unit))
struct ConfirmedOutboxTests {
    private let directory = makeTemporaryDirectory("keel-outbox")
    private let broker = RefusingBroker()
    private let store: SQLiteHistoryStore
    private let coordinator: Coordinator

    init() throws {
        store = try SQLiteHistoryStore(path: directory.appendingPathComponent("keel.sqlite").path)
        coordinator = Coordinator(store: store, workflows: testWorkflows, publisher: broker, clock: ManualClock())
    }

    /// Starts a run of one step; returns its published task.
    private func startOneStep(_ workflowId: String) async throws -> ActivityTask {
        _ = try await coordinator.start(
            StartRequest(workflowType: TwelveSteps.name, workflowId: workflowId, input: try Payload(encoding: 1, field: "input")))
        return try #require(broker.broker.take(), "the step's task was published")
    }

    @Test func aConfirmedTasksRowGoesWithTheNextCommit() async throws {
        let first = try await startOneStep("first")
        #expect(try store.outbox(skipping: []).map(\.attemptKey) == [first.attemptKey], "kept until a commit takes it along")
        let second = try await startOneStep("second")
        #expect(
            try store.outbox(skipping: []).map(\.attemptKey) == [second.attemptKey],
            "the second start's commit deleted the first row")
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).isEmpty)
        // Nothing was published twice.
        #expect(try await coordinator.flushOutbox() == 0)
        #expect(broker.broker.publishedCount == 2)
    }

    /// A worker reports an attempt delivered again before it began: the coordinator sends the
    /// same attempt again, with the same outbox key as the row still waiting for deletion. That
    /// row must stay until the new publish is confirmed: here it fails, and the outbox publishes
    /// the task later.
    @Test func anAttemptSentAgainKeepsItsRowUntilItsOwnPublishIsConfirmed() async throws {
        let task = try await startOneStep("again")
        broker.refusing.withLock { $0 = true }
        let applied = try await coordinator.apply([
            .redelivered(
                ActivityRedelivered(runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: "w:1"))
        ])
        #expect(applied == [true])
        await coordinator.deleteConfirmedOutbox()
        #expect(
            try store.outbox(skipping: []).map(\.attemptKey) == [task.attemptKey],
            "the row of the refused publish stays for the outbox's next flush")

        broker.refusing.withLock { $0 = false }
        #expect(try await coordinator.flushOutbox() == 1)
        let copy = try #require(broker.broker.take(), "published from the outbox")
        #expect(copy.attemptKey == task.attemptKey && copy.republished == true)
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).isEmpty)
    }

    /// The results loop leaves a publish's confirm to the publisher's thread (no task waits for
    /// it): until it comes the row stays and is not published again; a confirm lets the next
    /// commit delete it, a failure leaves it to the outbox's flush.
    @Test func aPublishSettledInTheBackgroundIsTakenInByTheNextCommitOrFlush() async throws {
        let task = try await startOneStep("background")
        broker.holding.withLock { $0 = true }
        func sendAgain() async throws -> PublishConfirmation {
            let redelivered = ActivityRedelivered(
                runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: "w:1")
            let (outgoing, applied) = try await coordinator.commit([.redelivered(redelivered)])
            #expect(applied == [true])
            let sending = await coordinator.send(outgoing)
            #expect(sending.settleInBackground())
            return try #require(broker.held.withLock { $0.last })
        }

        // Refused by the broker after the fact: the row stays and the flush publishes it.
        let refused = try await sendAgain()
        #expect(try await coordinator.flushOutbox() == 0, "not published again while in flight")
        refused.settle(RefusingBroker.Refused())
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).map(\.attemptKey) == [task.attemptKey])
        broker.holding.withLock { $0 = false }
        #expect(try await coordinator.flushOutbox() == 1)
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).isEmpty)
    }

    @Test func aConfirmSettledInTheBackgroundLetsTheRowGo() async throws {
        let task = try await startOneStep("confirmed")
        await coordinator.deleteConfirmedOutbox()
        broker.holding.withLock { $0 = true }
        let redelivered = ActivityRedelivered(
            runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: "w:1")
        let (outgoing, _) = try await coordinator.commit([.redelivered(redelivered)])
        let sending = await coordinator.send(outgoing)
        #expect(sending.settleInBackground())
        let confirmation = try #require(broker.held.withLock { $0.last })
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).map(\.attemptKey) == [task.attemptKey], "kept until confirmed")
        confirmation.settle(nil)
        await coordinator.deleteConfirmedOutbox()
        #expect(try store.outbox(skipping: []).isEmpty)
        #expect(try await coordinator.flushOutbox() == 0)
    }
}
