import Foundation
import KeelCore
import Logging

// Activity attempts: dispatch, start, failure and the retry decision, budget and breaker refusals.
extension Coordinator {
    /// Publishes the activity's current attempt (through the outbox).
    func publishAttempt(_ activity: inout ActivityRecord, in run: LiveRun, _ work: inout Work) {
        activity.state = .scheduled
        activity.attemptScheduledAt = work.now
        activity.waitingSince = nil
        let options = activity.options
        work.batch.outbox.append(task(for: activity, in: run))
        if let timeout = options.scheduleToStartTimeout {
            work.batch.set(
                TimerRecord(
                    runId: run.runId, kind: .scheduleToStart, seq: activity.activityId,
                    fireAt: work.now.addingTimeInterval(timeout), attempt: activity.attempt))
        }
        save(activity, in: run, &work)
    }

    /// The task of the activity's current attempt.
    func task(for activity: ActivityRecord, in run: LiveRun) -> ActivityTask {
        let options = activity.options
        var task = ActivityTask(
            workflowId: run.record.workflowId, runId: run.runId, workflowType: run.record.workflowType,
            activityId: activity.activityId, activityType: activity.activityType, attempt: activity.attempt,
            input: activity.input, taskQueue: options.taskQueue, scheduledAt: activity.scheduledAt,
            attemptScheduledAt: activity.attemptScheduledAt, startToCloseTimeout: options.startToCloseTimeout,
            scheduleToCloseTimeout: options.scheduleToCloseTimeout, heartbeatTimeout: options.heartbeatTimeout,
            heartbeatDetails: activity.heartbeatDetails, scheduleToStartTimeout: options.scheduleToStartTimeout,
            trace: run.traceHeaders, providers: activity.route,
            claimBeforeRunning: activity.options.countsAgainstBudget || activity.claimFirst == true)
        task.coordinatorEpoch = configuration.epoch
        return task
    }

    /// `ranSeconds`: the start came with the attempt's result, which says how long the activity
    /// ran; the event keeps this moment (the history's times never go back), and says when the
    /// attempt began, for the timeline and the metrics.
    func markStarted(
        _ activity: inout ActivityRecord, worker: String, ranSeconds: Double? = nil, in run: LiveRun, _ work: inout Work
    ) {
        // Not before the attempt was scheduled: a worker's clock is its own.
        let ran = ranSeconds.map { min(max($0, 0), max(work.now.timeIntervalSince(activity.attemptScheduledAt), 0)) }
        let attributes = ActivityStartedAttributes(capacityWaitSeconds: activity.capacityWait, ranSeconds: ran)
        append(
            HistoryEvent(
                id: 0, time: work.now, kind: .activityStarted, ref: activity.activityId, name: worker,
                attempt: activity.attempt,
                attributes: attributes.payload),
            to: run, &work)
        let began = work.now.addingTimeInterval(-(ran ?? 0))
        metrics.attemptStarted(activity, now: began)
        activity.state = .started
        activity.startedAt = began
        activity.startedBy = worker
        let seq = activity.activityId
        deleteTimers([.scheduleToStart], of: activity, in: run, &work)
        if let timeout = activity.options.startToCloseTimeout {
            work.batch.set(
                TimerRecord(
                    runId: run.runId, kind: .startToClose, seq: seq, fireAt: work.now.addingTimeInterval(timeout),
                    attempt: activity.attempt))
        }
        if let timeout = activity.options.heartbeatTimeout {
            work.batch.set(
                TimerRecord(
                    runId: run.runId, kind: .heartbeat, seq: seq, fireAt: work.now.addingTimeInterval(timeout),
                    attempt: activity.attempt))
        }
        save(activity, in: run, &work)
    }

    /// Records a failed attempt and either schedules the next one or ends the activity.
    func attemptFailed(
        _ activity: inout ActivityRecord, failure: Failure, kind: EventKind, in run: LiveRun, _ work: inout Work
    ) {
        forget(activity, in: run, now: work.now)
        if let refusal = budgetRefusal(of: activity, in: run, cause: failure) {
            metrics.attemptFailed(activity, failure: failure, willRetry: false)
            activityFailedFinally(&activity, failure: refusal, kind: kind, in: run, &work)
            return
        }
        let deadline = activity.options.scheduleToCloseTimeout.map { activity.scheduledAt.addingTimeInterval($0) }
        // A rate-limited LLM attempt waits for capacity instead of a backoff (its provider is
        // blocked for the wait it was told), without counting against maximumAttempts.
        let waitsForCapacity = waitsForCapacity(after: failure, activity, deadline: deadline, now: work.now)
        let decision =
            waitsForCapacity
            ? .retry(after: 0)
            : activity.options.retryPolicy.decide(
                attempt: activity.attemptsSinceRedrive, failure: failure, now: work.now, deadline: deadline,
                random: Double.random(in: 0..<1, using: &generator))
        var failure = failure
        let seq = activity.activityId
        metrics.attemptFailed(activity, failure: failure, willRetry: decision.willRetry)
        switch decision {
        case .retry(let delay):
            failure.retryState = .willRetry
            if !waitsForCapacity { failure.nextAttemptAt = work.now.addingTimeInterval(delay) }
            // Applied, not only recorded: the workflow counts the attempt's usage (replay does too).
            apply(
                HistoryEvent(id: 0, time: work.now, kind: kind, ref: seq, attempt: activity.attempt, failure: failure),
                to: run, &work)
            let providers = ProviderOutcome.reported(in: failure.details).map(\.provider)
            activity.lastProviders = providers.isEmpty ? nil : providers
            deleteTimers([.scheduleToStart, .startToClose, .heartbeat], of: activity, in: run, &work)
            if waitsForCapacity {
                activity.rateLimitedAttempts = (activity.rateLimitedAttempts ?? 0) + 1
                dispatch(&activity, in: run, &work)
                return
            }
            activity.state = .backoff
            activity.startedAt = nil
            activity.startedByClaim = nil
            work.batch.set(
                TimerRecord(
                    runId: run.runId, kind: .retry, seq: seq, fireAt: work.now.addingTimeInterval(delay),
                    attempt: activity.attempt))
            save(activity, in: run, &work)
        case .stop(let state):
            failure.retryState = state
            activityFailedFinally(&activity, failure: failure, kind: kind, in: run, &work)
        }
    }

    /// The failure that takes the place of another attempt of a budgeted activity once the run's
    /// budget is spent (the failed attempt's own usage, in `cause`, included); nil when the
    /// attempt may go.
    func budgetRefusal(of activity: ActivityRecord, in run: LiveRun, cause: Failure?) -> Failure? {
        guard activity.options.countsAgainstBudget, let limit = run.record.options.budget else { return nil }
        let spent = run.record.spend + (cause?.details.flatMap(Spend.reported(in:)) ?? .zero)
        guard limit.isExhausted(by: spent) else { return nil }
        let error = BudgetExhaustedError(
            budget: Budget(limit: limit, spent: spent), activityType: "another attempt of \(activity.activityType)")
        var failure = Failure(error)
        if let cause { failure.message += "; the last attempt failed with \(cause)" }
        // Keep the cause's details: its usage is counted when this failure is recorded.
        failure.details = cause?.details
        failure.retryState = .nonRetryableFailure
        return failure
    }

    /// The failure that takes the place of a retry when every provider the last attempt called
    /// has its circuit breaker open: retrying would only add to the flood. The failure event is
    /// the recorded decision; replay never asks the breakers.
    func circuitRefusal(of activity: ActivityRecord) -> Failure? {
        // An LLM call's providers are chosen again at dispatch, from its whole chain.
        guard !isLLMCall(activity), let providers = activity.lastProviders, !providers.isEmpty,
            providers.allSatisfy({ !breakers.wouldAdmit($0) })
        else { return nil }
        return Failure(
            type: "CircuitOpen",
            message:
                "not retried: the circuit breaker of every provider it called is open (\(providers.joined(separator: ", ")))",
            nonRetryable: true, retryState: .nonRetryableFailure)
    }

    func save(_ activity: ActivityRecord, in run: LiveRun, _ work: inout Work) {
        run.activities[activity.activityId] = activity
        configuration.startedAttempts.note(activity)
        work.batch.save(activity)
    }

    func endActivity(_ activity: ActivityRecord, in run: LiveRun, _ work: inout Work) {
        forget(activity, in: run, now: work.now)
        let seq = activity.activityId
        run.activities.removeValue(forKey: seq)
        work.batch.deleteActivity(runId: run.runId, activityId: seq)
        deleteTimers([.retry, .scheduleToStart, .startToClose, .heartbeat, .scheduleToClose], of: activity, in: run, &work)
    }

    /// Deletes the activity's timers of `kinds` that can exist: a timeout the options leave
    /// unset never had a timer, and a retry timer exists only in backoff. (Saves a statement
    /// per missing timer on the hot path.)
    func deleteTimers(
        _ kinds: [TimerRecord.Kind], of activity: ActivityRecord, in run: LiveRun, _ work: inout Work
    ) {
        let options = activity.options
        for kind in kinds {
            let armed: Bool
            switch kind {
            case .retry: armed = activity.state == .backoff
            case .scheduleToStart: armed = options.scheduleToStartTimeout != nil
            case .startToClose: armed = options.startToCloseTimeout != nil
            case .heartbeat: armed = options.heartbeatTimeout != nil
            case .scheduleToClose: armed = options.scheduleToCloseTimeout != nil
            case .workflowTimer, .executionTimeout: armed = true
            }
            if armed { work.batch.deleteTimer(runId: run.runId, kind: kind, seq: activity.activityId) }
        }
    }
}
