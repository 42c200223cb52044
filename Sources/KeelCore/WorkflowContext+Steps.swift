import Foundation
import Logging

// What workflow code awaits: activities, durable sleeps, conditions, child workflows; and continue-as-new.
extension WorkflowContext {
    /// Runs an activity on a worker and returns its result, retrying per `options.retryPolicy`.
    ///
    /// Throws ``ActivityFailedError`` when the activity failed for good, ``CancelledError`` when
    /// the workflow is cancelled while it waits.
    public func execute<A: Activity>(
        _ activity: A.Type, input: A.Input, options: ActivityOptions
    ) async throws -> A.Output {
        let result = try await execute(activityType: A.name, input: input, options: options)
        return try result.decode(A.Output.self, field: "result of activity \(A.name)")
    }

    /// Runs an activity by type name (for activities implemented outside this process, for
    /// example in Python) and returns its raw JSON result.
    public func execute(
        activityType: String, input: some Encodable, options: ActivityOptions
    ) async throws -> Payload {
        try checkUsable()
        try options.validate(activityType: activityType)
        if options.countsAgainstBudget, budget.isExhausted {
            throw BudgetExhaustedError(budget: budget, activityType: activityType)
        }
        let payload = try Payload(
            encoding: input, field: "input of activity \(activityType)", limit: payloadLimit)
        let seq = nextSeq()
        try issue(.scheduleActivity(seq: seq, type: activityType, input: payload, options: options))
        return try await withCheckedThrowingContinuation { continuation in
            pendingActivities[seq] = PendingActivity(type: activityType, continuation: continuation)
        }
    }

    /// Sleeps durably: the timer is stored, survives restarts and fires once.
    public func sleep(for duration: Duration) async throws {
        try checkUsable()
        guard duration > .zero else { return }
        let seq = nextSeq()
        try issue(.startTimer(seq: seq, seconds: duration.seconds))
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            pendingTimers[seq] = continuation
        }
    }

    /// Waits until `predicate` holds. It is checked after every event the workflow receives.
    public func condition(_ predicate: @escaping () -> Bool) async throws {
        _ = try await wait(timeout: nil, predicate)
    }

    /// Waits until `predicate` holds or `timeout` passes; returns whether the predicate held.
    public func condition(timeout: Duration, _ predicate: @escaping () -> Bool) async throws -> Bool {
        try await wait(timeout: timeout, predicate)
    }

    func wait(timeout: Duration?, _ predicate: @escaping () -> Bool) async throws -> Bool {
        try checkUsable()
        if predicate() { return true }
        var timerSeq: Int64?
        if let timeout {
            guard timeout > .zero else { return false }
            let seq = nextSeq()
            try issue(.startTimer(seq: seq, seconds: timeout.seconds))
            timerSeq = seq
        }
        nextConditionId += 1
        let id = nextConditionId
        return try await withCheckedThrowingContinuation { continuation in
            conditions.append(
                ConditionWait(id: id, timerSeq: timerSeq, predicate: predicate, continuation: continuation))
        }
    }

    /// Starts a child workflow and waits for its result. The child's id defaults to
    /// `<parent id>/child-<n>`, stable across replays.
    public func executeChild<W: Workflow>(
        _ workflow: W.Type, id: String? = nil, input: W.Input, options: WorkflowOptions = .init()
    ) async throws -> W.Output {
        try checkUsable()
        let payload = try Payload(encoding: input, field: "input of child workflow \(W.name)", limit: payloadLimit)
        let seq = nextSeq()
        let childId = id ?? "\(info.workflowId)/child-\(seq)"
        try issue(.startChildWorkflow(seq: seq, type: W.name, workflowId: childId, input: payload, options: options))
        let result = try await withCheckedThrowingContinuation { continuation in
            pendingChildren[seq] = PendingChild(type: W.name, workflowId: childId, continuation: continuation)
        }
        return try result.decode(W.Output.self, field: "result of child workflow \(W.name)")
    }

    /// Ends this run and starts a new run of the same workflow id with `input` and an empty
    /// history. Use it to keep long-lived workflows' histories short.
    public func continueAsNew<I: Encodable>(input: I) throws -> Never {
        let payload = try Payload(encoding: input, field: "continue-as-new input", limit: payloadLimit)
        throw ContinueAsNewRequest(input: payload)
    }
}
