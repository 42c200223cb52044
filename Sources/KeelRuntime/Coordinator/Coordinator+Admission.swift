import Foundation
import KeelCore
import Logging

// Admission by capacity: LLM calls against their providers' learned limits, tasks against their
// queue's cap, budgeted activities against their run's budget (reserving the estimate), with
// priority and fair share among the attempts that wait.
extension Coordinator {
    enum AdmissionDecision {
        case admit(provider: String?, route: [String]?, demand: CallDemand?, reserve: Spend)
        case wait
        case refuse(Failure)
    }

    func isLLMCall(_ activity: ActivityRecord) -> Bool { activity.activityType == CallDemand.activityType }

    /// Whether the activity's attempts wait in the coordinator until capacity admits them.
    func needsAdmission(_ activity: ActivityRecord, in run: LiveRun) -> Bool {
        let capacity = configuration.capacity
        guard capacity.enabled else { return false }
        if isLLMCall(activity) || capacity.taskQueueLimits[activity.options.taskQueue] != nil { return true }
        return activity.options.countsAgainstBudget && run.record.options.budget != nil
    }

    /// Starts the activity's next attempt: it waits for capacity, or is published at once.
    func dispatch(_ activity: inout ActivityRecord, in run: LiveRun, _ work: inout Work) {
        activity.attempt += 1
        activity.startedAt = nil
        activity.startedByClaim = nil
        activity.startedBy = nil
        if needsAdmission(activity, in: run) {
            activity.state = .waiting
            activity.waitingSince = work.now
            admission.queue.add(waitingEntry(activity, in: run))
            save(activity, in: run, &work)
            return
        }
        if isLLMCall(activity) {
            guard let route = route(for: activity, now: work.now) else {
                activityFailedFinally(&activity, failure: circuitOpen(activity), kind: .activityFailed, in: run, &work)
                return
            }
            activity.route = route.isEmpty ? nil : route
            if let first = route.first { _ = breakers.admit(first, now: work.now) }
        }
        publishAttempt(&activity, in: run, &work)
    }

    func waitingEntry(_ activity: ActivityRecord, in run: LiveRun) -> AdmissionQueue.Entry {
        AdmissionQueue.Entry(
            key: .init(runId: run.runId, activityId: activity.activityId),
            priority: activity.options.priority ?? run.record.options.priority ?? Priority.default,
            fairnessKey: activity.options.fairnessKey ?? run.record.options.fairnessKey ?? "",
            since: activity.waitingSince ?? activity.attemptScheduledAt)
    }

    /// The providers an LLM call may use now, in order: those its request allows (else the
    /// configured chain) whose breaker lets a call through. Nil: every breaker is open. Empty:
    /// the coordinator knows no provider; the worker uses its own chain.
    func route(for activity: ActivityRecord, now: Date) -> [String]? {
        let allowed = CallDemand.request(in: activity.input)?.providers ?? configuration.providerChain
        guard !allowed.isEmpty else { return [] }
        let open = allowed.filter { breakers.wouldAdmit($0, now: now) }
        return open.isEmpty ? nil : open
    }

    func circuitOpen(_ activity: ActivityRecord) -> Failure {
        let allowed = CallDemand.request(in: activity.input)?.providers ?? configuration.providerChain
        return Failure(
            type: "CircuitOpen",
            message: "not sent: the circuit breaker of every provider it may call is open (\(allowed.joined(separator: ", ")))",
            nonRetryable: true, retryState: .nonRetryableFailure)
    }

    /// Admits what waits, in order, while capacity lasts. A provider or queue that has no room
    /// for one attempt is full for those after it in this pass, so lower priorities and other
    /// keys never take the room the one before them waits for.
    func admitWaiting(_ work: inout Work) {
        guard !admission.queue.isEmpty else { return }
        admission.lastPass = work.now
        var full: Set<String> = []
        for entry in admission.queue.ordered() {
            guard let run = runs[entry.key.runId], var activity = run.activities[entry.key.activityId],
                activity.state == .waiting
            else {
                admission.queue.remove(entry.key)
                continue
            }
            switch decide(activity, in: run, full: &full, now: work.now) {
            case .wait:
                continue
            case .refuse(let failure):
                admission.queue.remove(entry.key)
                activityFailedFinally(&activity, failure: failure, kind: .activityFailed, in: run, &work)
            case .admit(let provider, let route, let demand, let reserve):
                admission.queue.admitted(entry.key)
                hold(activity, in: run, provider: provider, demand: demand, reserve: reserve, now: work.now)
                if let provider { _ = breakers.admit(provider, now: work.now) }
                let waited = max(work.now.timeIntervalSince(activity.waitingSince ?? work.now), 0)
                activity.capacityWaits = (activity.capacityWaits ?? [:]).merging([activity.attempt: waited]) { _, new in new }
                metrics.admitted(activity, provider: provider, waited: waited)
                activity.route = route
                publishAttempt(&activity, in: run, &work)
            }
        }
        metrics.waiting(admission.queue.count)
    }

    private func decide(
        _ activity: ActivityRecord, in run: LiveRun, full: inout Set<String>, now: Date
    ) -> AdmissionDecision {
        let queueKey = "queue:" + activity.options.taskQueue
        if full.contains(queueKey) { return .wait }
        if let cap = configuration.capacity.taskQueueLimits[activity.options.taskQueue],
            admission.queueInFlight[activity.options.taskQueue, default: 0] >= cap
        {
            full.insert(queueKey)
            return .wait
        }
        var route: [String]?
        let request = isLLMCall(activity) ? CallDemand.request(in: activity.input) : nil
        if isLLMCall(activity) {
            guard let candidates = self.route(for: activity, now: now) else { return .refuse(circuitOpen(activity)) }
            route = candidates.isEmpty ? nil : candidates
        }
        // The budget: spent, plus what admitted attempts reserved, plus this one's estimate.
        var reserve = Spend.zero
        if activity.options.countsAgainstBudget, let limit = run.record.options.budget {
            if let refusal = budgetRefusal(of: activity, in: run, cause: nil) { return .refuse(refusal) }
            reserve = estimate(activity, request: request, provider: route?.first)
            let reserved = admission.reservedByRun[run.runId] ?? .zero
            // With nothing else in flight the call goes (its overshoot is bounded by itself).
            if !reserved.isZero, limit.isExhausted(by: run.record.spend + reserved + reserve) { return .wait }
        }
        guard let candidates = route else { return .admit(provider: nil, route: nil, demand: nil, reserve: reserve) }
        for (index, provider) in candidates.enumerated() where !full.contains("provider:" + provider) {
            let profile = configuration.capacity.providers[provider]
            let demand = CallDemand(request, defaultMaxTokens: profile?.maxTokens ?? 1024)
            var capacity = admission.capacity(of: provider, profile: profile, now: now)
            let fits = capacity.fits(demand, now: now)
            admission.providers[provider] = capacity
            if fits {
                return .admit(provider: provider, route: Array(candidates[index...]), demand: demand, reserve: reserve)
            }
            full.insert("provider:" + provider)
        }
        return .wait
    }

    /// What an attempt of `activity` is expected to spend, for the budget's reservation.
    func estimate(_ activity: ActivityRecord, request: CallDemand.Request?, provider: String?) -> Spend {
        guard isLLMCall(activity) else { return admission.largestSpend[activity.activityType] ?? .zero }
        let profile = provider.flatMap { configuration.capacity.providers[$0] }
        let demand = CallDemand(request, defaultMaxTokens: profile?.maxTokens ?? 1024)
        return Spend(
            inputTokens: demand.inputTokens, outputTokens: demand.outputTokens,
            costUSD: profile?.cost(inputTokens: demand.inputTokens, outputTokens: demand.outputTokens) ?? 0)
    }

    func hold(
        _ activity: ActivityRecord, in run: LiveRun, provider: String?, demand: CallDemand?, reserve: Spend, now: Date,
        taking: Bool = true
    ) {
        let queue = configuration.capacity.taskQueueLimits[activity.options.taskQueue] != nil ? activity.options.taskQueue : nil
        if let queue { admission.queueInFlight[queue, default: 0] += 1 }
        if !reserve.isZero { admission.reservedByRun[run.runId, default: .zero] += reserve }
        if let provider, let demand {
            var capacity = admission.capacity(of: provider, profile: configuration.capacity.providers[provider], now: now)
            if taking { capacity.take(demand) } else { capacity.inFlight += 1 }
            admission.providers[provider] = capacity
            admission.dirty.insert(provider)
        }
        admission.holds[activity.attemptKey] = AdmissionState.Hold(
            runId: run.runId, activityId: activity.activityId, provider: provider, demand: demand, taskQueue: queue,
            reserved: reserve, since: now)
    }

    /// An attempt ended (its result came, it timed out, its run closed): gives back what it
    /// held. With the calls it reported (`outcomes`), its provider gets back the estimate and is
    /// charged what each call used, and learns from their rate-limit headers; without, the
    /// estimate stays taken (the call may have been made).
    func release(_ attemptKey: String, outcomes: [ProviderOutcome]?, now: Date) {
        if let hold = admission.holds.removeValue(forKey: attemptKey) {
            if let queue = hold.taskQueue {
                admission.queueInFlight[queue] = max((admission.queueInFlight[queue] ?? 1) - 1, 0)
            }
            if !hold.reserved.isZero, var reserved = admission.reservedByRun[hold.runId] {
                reserved = Spend(
                    inputTokens: reserved.inputTokens - hold.reserved.inputTokens,
                    outputTokens: reserved.outputTokens - hold.reserved.outputTokens,
                    costUSD: reserved.costUSD - hold.reserved.costUSD)
                admission.reservedByRun[hold.runId] = reserved.totalTokens <= 0 && reserved.costUSD <= 1e-12 ? nil : reserved
            }
            if let provider = hold.provider, let demand = hold.demand, var capacity = admission.providers[provider] {
                capacity.endCall(refunding: outcomes == nil ? nil : demand)
                admission.providers[provider] = capacity
                admission.dirty.insert(provider)
            }
        }
        learn(from: outcomes ?? [], now: now)
    }

    /// Charges each call's provider what it used and corrects its capacity with the headers.
    func learn(from outcomes: [ProviderOutcome], now: Date) {
        for outcome in outcomes {
            var capacity = admission.capacity(
                of: outcome.provider, profile: configuration.capacity.providers[outcome.provider], now: now)
            let rateLimited = outcome.errorType == "LLMRateLimited"
            if !rateLimited {
                let usage = outcome.usage ?? .zero
                capacity.charge(CallDemand(inputTokens: usage.inputTokens, outputTokens: usage.outputTokens))
            }
            capacity.learn(outcome.limits, rateLimited: rateLimited, now: now)
            admission.providers[outcome.provider] = capacity
            admission.dirty.insert(outcome.provider)
            if rateLimited {
                metrics.rateLimited(provider: outcome.provider)
            }
        }
    }

    /// Gives back what the activity's current attempt holds and takes it out of the queue.
    func forget(_ activity: ActivityRecord, in run: LiveRun, now: Date) {
        admission.queue.remove(.init(runId: run.runId, activityId: activity.activityId))
        release(activity.attemptKey, outcomes: nil, now: now)
    }

    /// A rate-limited LLM attempt, while the coordinator admits by capacity: its provider is
    /// blocked for the wait it was told (by ``learn(from:now:)``), and the activity waits for
    /// capacity again without the attempt counting against `maximumAttempts`. Nil when the
    /// retry policy decides instead (admission off, the type made non-retryable, past the
    /// schedule-to-close deadline).
    func waitAfterRateLimit(
        _ activity: inout ActivityRecord, failure: Failure, kind: EventKind, in run: LiveRun, _ work: inout Work
    ) -> Bool {
        guard configuration.capacity.enabled, isLLMCall(activity), failure.type == "LLMRateLimited",
            !activity.options.retryPolicy.nonRetryableErrorTypes.contains(failure.type)
        else { return false }
        if let limit = activity.options.scheduleToCloseTimeout, work.now >= activity.scheduledAt.addingTimeInterval(limit) {
            return false
        }
        var failure = failure
        failure.retryState = .willRetry
        metrics.attemptFailed(activity, failure: failure, willRetry: true)
        apply(
            HistoryEvent(
                id: 0, time: work.now, kind: kind, ref: activity.activityId, attempt: activity.attempt, failure: failure),
            to: run, &work)
        let providers = ProviderOutcome.reported(in: failure.details).map(\.provider)
        activity.lastProviders = providers.isEmpty ? nil : providers
        activity.rateLimitedAttempts = (activity.rateLimitedAttempts ?? 0) + 1
        deleteTimers([.scheduleToStart, .startToClose, .heartbeat], of: activity, in: run, &work)
        dispatch(&activity, in: run, &work)
        return true
    }

    /// Admits what waits if the last pass is at least `interval` old: capacity refills with time.
    public func admitWaitingIfDue(interval: Double = 0.1) async throws {
        guard !admission.queue.isEmpty, clock.now().timeIntervalSince(admission.lastPass) >= interval else { return }
        var work = Work(now: clock.now())
        try await finish(&work)
    }

    /// How many attempts wait for capacity.
    public var waitingForCapacity: Int { admission.queue.count }

    /// Writes the providers' capacity to the store at most once a second, with the work.
    func persistCapacity(_ work: inout Work) {
        guard !admission.dirty.isEmpty, work.now.timeIntervalSince(admission.lastPersisted) >= 1 else { return }
        for provider in admission.dirty.sorted() {
            guard var capacity = admission.providers[provider] else { continue }
            capacity.refill(work.now)
            admission.providers[provider] = capacity
            work.batch.providerCapacity.append(capacity.snapshot(provider: provider))
            metrics.capacity(provider: provider, remaining: capacity.remaining())
        }
        admission.dirty.removeAll()
        admission.lastPersisted = work.now
    }

    /// Start-up: the breakers' and providers' states as the last coordinator left them.
    func restoreCapacity(now: Date) throws {
        breakers.restore(try store.circuitBreakers())
        for snapshot in try store.providerCapacity() {
            admission.providers[snapshot.provider] = ProviderCapacity(
                restoring: snapshot, limits: configuration.capacity.providers[snapshot.provider]?.limits, now: now)
        }
    }

    /// Start-up: puts a loaded activity back in the queue (in `waiting`) or takes up what its
    /// published attempt holds. Waiting ones are added in the order they began to wait.
    func readmit(_ activities: [(ActivityRecord, LiveRun)], now: Date) {
        for (activity, run) in activities.sorted(by: { ($0.0.waitingSince ?? .distantPast) < ($1.0.waitingSince ?? .distantPast) }
        ) {
            switch activity.state {
            case .waiting:
                admission.queue.add(waitingEntry(activity, in: run))
            case .scheduled, .started:
                guard needsAdmission(activity, in: run) else { continue }
                let provider = activity.route?.first
                let request = isLLMCall(activity) ? CallDemand.request(in: activity.input) : nil
                let demand = provider.map {
                    CallDemand(request, defaultMaxTokens: configuration.capacity.providers[$0]?.maxTokens ?? 1024)
                }
                let reserve =
                    activity.options.countsAgainstBudget && run.record.options.budget != nil
                    ? estimate(activity, request: request, provider: provider) : .zero
                // The restored buckets already count the call: only its slot is taken again.
                hold(activity, in: run, provider: provider, demand: demand, reserve: reserve, now: now, taking: false)
            case .backoff, .parked:
                continue
            }
        }
    }
}

extension ActivityRecord {
    /// The attempt key of the current attempt (as ``ActivityTask/attemptKey``).
    var attemptKey: String { "\(runId)/\(activityId)/\(attempt)" }
}
