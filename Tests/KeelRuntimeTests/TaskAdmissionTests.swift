import Foundation
import Keel
import Testing

@testable import KeelAMQP
@testable import KeelRuntime

/// What a worker does with each delivery (docs/protocol.md, steps 0 and 0b), decided without a
/// broker.
@Suite("Task admission", .tags(.unit))
struct TaskAdmissionTests {
    let admission = TaskAdmission(activities: ["summarize", "noop"])

    func task(_ activityType: String = "summarize", republished: Bool = false) -> ActivityTask {
        var task = ActivityTask(
            workflowId: "doc-7", runId: "run-1", workflowType: "document-processing", activityId: 3, activityType: activityType,
            attempt: 1, input: .null, taskQueue: "llm", scheduledAt: Date(timeIntervalSince1970: 1_800_000_000),
            attemptScheduledAt: Date(timeIntervalSince1970: 1_800_000_000), startToCloseTimeout: 60, scheduleToCloseTimeout: nil,
            heartbeatTimeout: nil, heartbeatDetails: nil)
        if republished { task.republished = true }
        return task
    }

    func delivery(_ body: Data, redelivered: Bool = false, headers: [String: String] = ["keel-type": "task"]) -> AMQPDelivery {
        AMQPDelivery(
            deliveryTag: 1, exchange: "keel.tasks", routingKey: "llm", redelivered: redelivered, body: body, type: "task",
            messageId: nil, replyTo: nil, correlationId: nil, headers: headers, death: nil)
    }

    @Test func aFirstDeliveryRuns() throws {
        #expect(admission.decide(delivery(try Wire.encode(task()))) == .run(task()))
    }

    @Test func aRedeliveredTaskIsReportedNeverRun() throws {
        #expect(admission.decide(delivery(try Wire.encode(task()), redelivered: true)) == .reportRedelivered(task()))
        // Even a republished copy: the redelivery says a worker may have run it.
        let copy = task(republished: true)
        #expect(admission.decide(delivery(try Wire.encode(copy), redelivered: true)) == .reportRedelivered(copy))
    }

    @Test func aRepublishedCopyIsClaimedFirstAndRunsOnlyWhenGranted() throws {
        let copy = task(republished: true)
        #expect(admission.decide(delivery(try Wire.encode(copy))) == .claim(copy))
        #expect(TaskAdmission.afterClaim(.granted) == .run)
        #expect(TaskAdmission.afterClaim(.refused) == .drop)
        #expect(TaskAdmission.afterClaim(.none) == .leave)
    }

    @Test func aTaskFromAnOlderCoordinatorEpochThanOneSeenIsClaimedFirst() throws {
        let admission = TaskAdmission(activities: ["summarize"])
        var old = task()
        old.coordinatorEpoch = 1_800_000_000_000
        var new = task()
        new.coordinatorEpoch = 1_800_000_005_000
        admission.epochs.heard(old.coordinatorEpoch)
        #expect(admission.decide(delivery(try Wire.encode(old))) == .run(old), "the epoch a coordinator told")
        #expect(admission.decide(delivery(try Wire.encode(new))) == .run(new), "a later one")
        #expect(admission.decide(delivery(try Wire.encode(old))) == .claim(old), "an earlier one than seen")
        #expect(admission.decide(delivery(try Wire.encode(task()))) == .run(task()), "no epoch: as before")
    }

    /// The first copy of a task whose coordinator stopped after publishing it carries that
    /// coordinator's epoch: until a coordinator tells the worker its own (its announcement on
    /// `keel.control`, or the answer to a claim), every task with an epoch is claimed.
    @Test func aTaskWithAnEpochIsClaimedUntilACoordinatorToldItsOwn() throws {
        let admission = TaskAdmission(activities: ["summarize"])
        var first = task()
        first.coordinatorEpoch = 1_800_000_000_000
        #expect(admission.decide(delivery(try Wire.encode(first))) == .claim(first), "no coordinator told its epoch yet")
        #expect(admission.decide(delivery(try Wire.encode(task()))) == .run(task()), "no epoch: as before")
        admission.epochs.heard(1_800_000_005_000)
        #expect(admission.decide(delivery(try Wire.encode(first))) == .claim(first), "older than the epoch told")
        var current = task()
        current.coordinatorEpoch = 1_800_000_005_000
        #expect(admission.decide(delivery(try Wire.encode(current))) == .run(current), "the epoch told")
        admission.epochs.heard(1_800_000_000_000)
        #expect(admission.decide(delivery(try Wire.encode(current))) == .run(current), "an older epoch told changes nothing")
    }

    @Test func anUnknownActivityFailsAtOnceAndIsDeadLettered() throws {
        guard case .failUnknownActivity(let failed, let failure) = admission.decide(delivery(try Wire.encode(task("translate"))))
        else {
            Issue.record("not failed")
            return
        }
        #expect(failed.activityType == "translate")
        #expect(failure.type == "UnknownActivityType")
        #expect(failure.message.contains("noop, summarize"))
    }

    @Test func whatIsNotAReadableTaskIsDeadLetteredWithTheReason() throws {
        func reason(_ message: AMQPDelivery) -> String? {
            if case .deadLetter(let reason) = admission.decide(message) { return reason }
            return nil
        }
        #expect(reason(delivery(Data("{not json".utf8)))?.contains("task body is not valid") == true)
        #expect(reason(delivery(Data(#"{"runId": 3}"#.utf8)))?.hasPrefix("BadMessage: task body is not valid") == true)
        var forever = task()
        forever.startToCloseTimeout = 1e308
        #expect(reason(delivery(try Wire.encode(forever)))?.contains("startToCloseTimeout is 1e+308") == true)
        let padded = delivery(try Wire.encode(task()), headers: ["x-padding": String(repeating: "p", count: 20_000)])
        #expect(reason(padded)?.contains("task headers is 20009 bytes") == true, "\(reason(padded) ?? "")")
    }
}
