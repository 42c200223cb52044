import Foundation
import Testing

@testable import KeelCore

@Suite("RetryPolicy", .tags(.unit))
struct RetryPolicyTests {
    let now = Date(timeIntervalSince1970: 1_000)
    let flake = Failure(type: "Flaky", message: "boom")

    @Test func defaultsAreTemporals() {
        let policy = RetryPolicy.default
        #expect(policy.initialInterval == 1)
        #expect(policy.backoffCoefficient == 2)
        #expect(policy.effectiveMaximumInterval == 100)
        #expect(policy.maximumAttempts == 0)
        #expect(policy.jitter == 0)
    }

    @Test func delaysGrowGeometricallyUntilTheCap() {
        let policy = RetryPolicy(initialInterval: .seconds(1), backoffCoefficient: 2, maximumInterval: .seconds(10))
        let delays = (1...6).map { policy.decide(attempt: $0, failure: flake, now: now, deadline: nil, random: 0) }
        #expect(
            delays == [
                .retry(after: 1), .retry(after: 2), .retry(after: 4), .retry(after: 8), .retry(after: 10), .retry(after: 10)
            ])
    }

    @Test func unlimitedAttemptsNeverStopOnCount() {
        let policy = RetryPolicy.default
        #expect(policy.decide(attempt: 10_000, failure: flake, now: now, deadline: nil, random: 0) == .retry(after: 100))
    }

    @Test func jitterOnlyShortensTheDelayAndStaysWithinItsFraction() {
        let policy = RetryPolicy(initialInterval: .seconds(10), maximumInterval: .seconds(100), jitter: 0.2)
        #expect(policy.decide(attempt: 1, failure: flake, now: now, deadline: nil, random: 0) == .retry(after: 10))
        #expect(policy.decide(attempt: 1, failure: flake, now: now, deadline: nil, random: 0.5) == .retry(after: 9))
        guard case .retry(let low) = policy.decide(attempt: 1, failure: flake, now: now, deadline: nil, random: 0.999_999) else {
            Issue.record("expected a retry")
            return
        }
        #expect(low > 8 && low <= 8.0001)
    }

    @Test func retryAfterWinsAndIsNotCappedByMaximumInterval() {
        let policy = RetryPolicy(initialInterval: .seconds(1), maximumInterval: .seconds(5), jitter: 0.5)
        var limited = flake
        limited.nextRetryDelay = 30
        #expect(policy.decide(attempt: 1, failure: limited, now: now, deadline: nil, random: 0.9) == .retry(after: 30))
    }

    @Test func nonRetryableByTypeNameOrByTheErrorItself() {
        let policy = RetryPolicy(nonRetryableErrorTypes: ["LLMBadRequest"])
        let bad = Failure(type: "LLMBadRequest", message: "400")
        #expect(policy.decide(attempt: 1, failure: bad, now: now, deadline: nil, random: 0) == .stop(.nonRetryableFailure))
        // Exact match only: a prefix is a different type.
        let similar = Failure(type: "LLMBadRequestish", message: "x")
        #expect(policy.decide(attempt: 1, failure: similar, now: now, deadline: nil, random: 0) == .retry(after: 1))
        let flagged = Failure(type: "Other", message: "x", nonRetryable: true)
        #expect(policy.decide(attempt: 1, failure: flagged, now: now, deadline: nil, random: 0) == .stop(.nonRetryableFailure))
    }

    @Test func maximumAttemptsCountsEveryAttempt() {
        let policy = RetryPolicy(maximumAttempts: 3)
        #expect(policy.decide(attempt: 2, failure: flake, now: now, deadline: nil, random: 0) == .retry(after: 2))
        #expect(policy.decide(attempt: 3, failure: flake, now: now, deadline: nil, random: 0) == .stop(.maximumAttemptsReached))
    }

    @Test func aRetryPastTheScheduleToCloseDeadlineIsNotMade() {
        let policy = RetryPolicy(initialInterval: .seconds(4))
        #expect(
            policy.decide(attempt: 1, failure: flake, now: now, deadline: now.addingTimeInterval(5), random: 0)
                == .retry(after: 4))
        #expect(
            policy.decide(attempt: 2, failure: flake, now: now, deadline: now.addingTimeInterval(5), random: 0) == .stop(.timeout)
        )
    }

    @Test func llmPolicyNeverRetriesClientErrors() {
        let policy = RetryPolicy.llmRecommended
        for type in ["LLMBadRequest", "LLMAuthenticationFailed", "LLMContentPolicy", "LLMContextLengthExceeded"] {
            #expect(
                policy.decide(attempt: 1, failure: Failure(type: type, message: ""), now: now, deadline: nil, random: 0)
                    == .stop(.nonRetryableFailure))
        }
        #expect(policy.maximumAttempts == 5)
        #expect(
            policy.decide(attempt: 1, failure: Failure(type: "LLMRateLimited", message: ""), now: now, deadline: nil, random: 0)
                == .retry(after: 2))
    }

    @Test func invalidPoliciesAndOptionsSayWhatToChange() throws {
        #expect(throws: InvalidOptionsError.self) { try RetryPolicy(backoffCoefficient: 0.5).validate() }
        #expect(throws: InvalidOptionsError.self) { try RetryPolicy(jitter: 2).validate() }
        let error = #expect(throws: InvalidOptionsError.self) {
            try ActivityOptions(taskQueue: "llm").validate(activityType: "summarize")
        }
        #expect(error?.message.contains("summarize needs startToCloseTimeout or scheduleToCloseTimeout") == true)
        try ActivityOptions(scheduleToCloseTimeout: .seconds(5)).validate(activityType: "a")
    }

    @Test func payloadsOverTheLimitNameTheirField() {
        let error = #expect(throws: PayloadError.self) {
            _ = try Payload(encoding: String(repeating: "x", count: 100), field: "input of activity summarize", limit: 50)
        }
        #expect(error?.kind == .tooLarge)
        #expect(error?.message.hasPrefix("input of activity summarize is 102 bytes, over the 50-byte payload limit") == true)
    }

    @Test func deterministicRandomRepeatsForTheSameSeed() {
        var first = DeterministicRandom(seed: 7)
        var second = DeterministicRandom(seed: 7)
        var other = DeterministicRandom(seed: 8)
        let a = (0..<5).map { _ in first.next() }
        let b = (0..<5).map { _ in second.next() }
        let c = (0..<5).map { _ in other.next() }
        #expect(a == b)
        #expect(a != c)
        #expect(first.uuid() == second.uuid())
    }
}
