import Foundation
import Testing

@testable import KeelCore

/// The console's timeline bars, read from a history.
@Suite("AttemptTimeline", .tags(.unit))
struct AttemptTimelineTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func event(
        _ id: Int64, _ at: Double, _ kind: EventKind, ref: Int64? = 1, name: String? = nil, attempt: Int? = nil,
        failure: Failure? = nil
    ) -> HistoryEvent {
        var event = HistoryEvent(
            id: id, time: start.addingTimeInterval(at), kind: kind, ref: ref, name: name, attempt: attempt, failure: failure)
        if kind == .activityScheduled {
            event.attributes = try? Payload(encoding: ActivityOptions(taskQueue: "llm"), field: "options")
        }
        return event
    }

    @Test func retriesTimeoutsAndARedriveBecomeOneBarPerAttempt() {
        var retrying = Failure(type: "LLMUnavailable", message: "503")
        retrying.retryState = .willRetry
        var workerTimeout = Failure.timeout(.startToClose)
        workerTimeout.retryState = .willRetry
        var exhausted = Failure(type: "LLMUnavailable", message: "503 again")
        exhausted.retryState = .maximumAttemptsReached
        let spans = AttemptTimeline.spans([
            Self.event(1, 0, .workflowStarted, ref: nil, name: "summarise"),
            Self.event(2, 0, .activityScheduled, name: "llm.complete"),
            Self.event(3, 0.5, .activityStarted, name: "w1", attempt: 1),
            Self.event(4, 1.5, .activityFailed, attempt: 1, failure: retrying),
            Self.event(5, 3.5, .activityStarted, name: "w2", attempt: 2),
            Self.event(6, 4.5, .activityFailed, attempt: 2, failure: workerTimeout),
            Self.event(7, 5, .activityStarted, name: "w1", attempt: 3),
            Self.event(8, 6, .activityParked, attempt: 3, failure: exhausted),
            Self.event(9, 60, .activityRedriven, attempt: 3),
            Self.event(10, 61, .activityStarted, name: "w2", attempt: 4),
            Self.event(11, 62, .activityCompleted, attempt: 4),
            Self.event(12, 62, .activityScheduled, ref: 2, name: "notify")
        ])
        #expect(spans.map(\.attempt) == [1, 2, 3, 4, 1])
        #expect(spans.map(\.outcome) == [.failed, .timedOut, .parked, .completed, .waiting])
        #expect(spans.map(\.retrying) == [true, true, false, false, false])
        #expect(spans.map(\.worker) == ["w1", "w2", "w1", "w2", nil])
        #expect(spans.map(\.taskQueue) == ["llm", "llm", "llm", "llm", "llm"])
        // The second attempt was scheduled when the first failed: its retry delay is the wait.
        #expect(spans[1].scheduledAt == Self.start.addingTimeInterval(1.5))
        #expect(spans[1].startedAt == Self.start.addingTimeInterval(3.5))
        #expect(spans[3].scheduledAt == Self.start.addingTimeInterval(60))
        #expect(spans[0].errorType == "LLMUnavailable")
        #expect(spans[1].errorType == "Timeout")
        #expect(spans[4].activityType == "notify" && spans[4].startedAt == nil)
    }
}
