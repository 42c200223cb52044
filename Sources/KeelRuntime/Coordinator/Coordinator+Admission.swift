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

    /// The request of an LLM call, decoded (nil for any other activity).
    func llmRequest(of activity: ActivityRecord) -> CallDemand.Request? {
        isLLMCall(activity) ? CallDemand.request(in: activity.input) : nil
    }

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
        activity.capacityWait = nil
        activity.unstartedRedeliveries = nil
        activity.claimFirst = work.fromRedelivered ? true : nil
        if needsAdmission(activity, in: run) {
            activity.state = .waiting
            activity.waitingSince = work.now
            admission.queue.add(waitingEntry(activity, in: run))
            save(activity, in: run, &work)
            return
        }
        if isLLMCall(activity) {
            let allowed = allowedProviders(llmRequest(of: activity))
            guard let route = route(from: allowed, now: work.now) else {
                activityFailedFinally(&activity, failure: circuitOpen(allowed), kind: .activityFailed, in: run, &work)
                return
            }
            activity.route = route.isEmpty ? nil : route
            if let first = route.first { _ = breakers.admit(first, now: work.now) }
        }
        publishAttempt(&activity, in: run, &work)
    }

    /// The activity's place in the queue, with its LLM request decoded once for every pass.
    func waitingEntry(_ activity: ActivityRecord, in run: LiveRun) -> AdmissionQueue.Entry {
        AdmissionQueue.Entry(
            key: .init(runId: run.runId, activityId: activity.activityId),
            priority: activity.options.priority ?? run.record.options.priority ?? Priority.default,
            fairnessKey: activity.options.fairnessKey ?? run.record.options.fairnessKey ?? "",
            since: activity.waitingSince ?? activity.attemptScheduledAt, request: llmRequest(of: activity))
    }

    /// The providers an LLM call may use: those its request names, else the configured chain.
    func allowedProviders(_ request: CallDemand.Request?) -> [String] { request?.providers ?? configuration.providerChain }

    /// Of `allowed`, those whose breaker lets a call through now, in order. Nil: every breaker is
    /// open. Empty: the coordinator knows no provider; the worker uses its own chain.
    func route(from allowed: [String], now: Date) -> [String]? {
        guard !allowed.isEmpty else { return [] }
        let open = allowed.filter { breakers.wouldAdmit($0, now: now) }
        return open.isEmpty ? nil : open
    }

    func circuitOpen(_ allowed: [String]) -> Failure {
        Failure(
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
            switch decide(entry, activity, in: run, full: &full, now: work.now) {
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
                activity.capacityWait = waited
                metrics.admitted(activity, provider: provider, waited: waited)
                activity.route = route
                // From the waiting queue: had this task gone out before the commit ended and the
                // coordinator stopped, the next one would admit the attempt again from the queue,
                // with nothing telling it that a copy may run.
                work.sendsDuringCommit = false
                publishAttempt(&activity, in: run, &work)
            }
        }
        metrics.waiting(admission.queue.count)
    }

    private func decide(
        _ entry: AdmissionQueue.Entry, _ activity: ActivityRecord, in run: LiveRun, full: inout Set<String>, now: Date
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
        if isLLMCall(activity) {
            let allowed = allowedProviders(entry.request)
            guard let candidates = self.route(from: allowed, now: now) else { return .refuse(circuitOpen(allowed)) }
            route = candidates.isEmpty ? nil : candidates
        }
        // The budget: spent, plus what admitted attempts reserved, plus this one's estimate.
        var reserve = Spend.zero
        if activity.options.countsAgainstBudget, let limit = run.record.options.budget {
            if let refusal = budgetRefusal(of: activity, in: run, cause: nil) { return .refuse(refusal) }
            reserve = estimate(activity, request: entry.request, provider: route?.first)
            let reserved = admission.reservedByRun[run.runId] ?? .zero
            // Calls in flight may leave room when they settle. With none, the call goes: its
            // estimate (an LLM call's output cap) is an upper bound that most calls stay well
            // under, and the budget is not spent yet; the run overshoots by at most this call.
            if !reserved.isZero, !limit.allows(run.record.spend + reserved + reserve) { return .wait }
        }
        guard let candidates = route else { return .admit(provider: nil, route: nil, demand: nil, reserve: reserve) }
        for (index, provider) in candidates.enumerated() where !full.contains("provider:" + provider) {
            let demand = demand(of: entry.request, at: provider)
            if withCapacity(of: provider, now: now, { $0.fits(demand, now: now) }) {
                return .admit(provider: provider, route: Array(candidates[index...]), demand: demand, reserve: reserve)
            }
            full.insert("provider:" + provider)
        }
        return .wait
    }

    /// What a call of `request` takes from `provider` (whose output cap applies when the request sets none).
    func demand(of request: CallDemand.Request?, at provider: String) -> CallDemand {
        CallDemand(request, defaultMaxTokens: configuration.capacity.providers[provider]?.maxTokens ?? 1024)
    }

    /// Runs `body` on `provider`'s capacity, made from its configured limits the first time.
    func withCapacity<T>(of provider: String, now: Date, _ body: (inout ProviderCapacity) -> T) -> T {
        body(
            &admission.providers[
                provider, default: ProviderCapacity(limits: configuration.capacity.providers[provider]?.limits, now: now)])
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

    /// Takes what an admitted attempt holds until it ends. `taking: false` (a restart) takes
    /// only the call's slot: the restored buckets already count the call, unless it was admitted
    /// before they were learned. Which it was is not stored, so an attempt not sent yet (still
    /// `scheduled`) takes its estimate again when a worker claims it
    /// (``confirmAdmission(_:now:)``): counted twice at worst, for one window, rather than not
    /// at all.
    func hold(
        _ activity: ActivityRecord, in run: LiveRun, provider: String?, demand: CallDemand?, reserve: Spend, now: Date,
        taking: Bool = true
    ) {
        let queue = configuration.capacity.taskQueueLimits[activity.options.taskQueue] != nil ? activity.options.taskQueue : nil
        if let queue { admission.queueInFlight[queue, default: 0] += 1 }
        if !reserve.isZero { admission.reservedByRun[run.runId, default: .zero] += reserve }
        var takenFrom: Set<CapacityKind> = []
        if let provider, let demand {
            takenFrom = withCapacity(of: provider, now: now) { capacity in
                guard taking else {
                    capacity.inFlight += 1
                    return activity.state == .scheduled ? [] : Set(capacity.buckets.keys)
                }
                return capacity.take(demand)
            }
            admission.dirty.insert(provider)
        }
        admission.holds[activity.attemptKey] = AdmissionState.Hold(
            runId: run.runId, provider: provider, demand: demand, takenFrom: takenFrom, taskQueue: queue,
            reserved: reserve)
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
            if !hold.reserved.isZero, let reserved = admission.reservedByRun[hold.runId] {
                let left = reserved - hold.reserved
                admission.reservedByRun[hold.runId] = left.totalTokens <= 0 && left.costUSD <= 1e-12 ? nil : left
            }
            if let provider = hold.provider, let demand = hold.demand {
                withCapacity(of: provider, now: now) {
                    $0.endCall(refunding: outcomes == nil ? nil : demand, from: hold.takenFrom)
                }
                admission.dirty.insert(provider)
            }
        }
        learn(from: outcomes ?? [], now: now)
    }

    /// Charges each call's provider what it used and corrects its capacity with the headers.
    func learn(from outcomes: [ProviderOutcome], now: Date) {
        for outcome in outcomes {
            let rateLimited = outcome.errorType == "LLMRateLimited"
            withCapacity(of: outcome.provider, now: now) { capacity in
                // A refused call took nothing.
                if !rateLimited {
                    let usage = outcome.usage ?? .zero
                    capacity.charge(CallDemand(inputTokens: usage.inputTokens, outputTokens: usage.outputTokens))
                }
                capacity.learn(outcome.limits, rateLimited: rateLimited, now: now)
            }
            admission.dirty.insert(outcome.provider)
            if rateLimited { metrics.rateLimited(provider: outcome.provider) }
        }
    }

    /// Gives back what the activity's current attempt holds and takes it out of the queue. Free
    /// when nothing waits or is held (every step's end passes here).
    func forget(_ activity: ActivityRecord, in run: LiveRun, now: Date) {
        configuration.startedAttempts.forget(runId: run.runId, activityId: activity.activityId)
        if !admission.queue.isEmpty { admission.queue.remove(.init(runId: run.runId, activityId: activity.activityId)) }
        if !admission.holds.isEmpty { release(activity.attemptKey, outcomes: nil, now: now) }
    }

    /// Confirms, when a worker claims it, the admission of an unstarted LLM attempt against
    /// what was learned since: its provider is not blocked by a 429, and no bucket goes below
    /// zero with the attempt's estimate in it. A bucket learned after the admission (from
    /// headers) takes the estimate now. Learning since the admission (a 429 from another call,
    /// headers with a lower `remaining`, a restarted coordinator's restored buckets) can take
    /// the room away while the task waits in RabbitMQ for a worker slot.
    func confirmAdmission(_ activity: ActivityRecord, now: Date) -> Bool {
        guard var hold = admission.holds[activity.attemptKey], let provider = hold.provider, let demand = hold.demand
        else { return true }
        let confirmed = withCapacity(of: provider, now: now) { $0.confirm(demand, takenFrom: &hold.takenFrom, now: now) }
        admission.holds[activity.attemptKey] = hold
        admission.dirty.insert(provider)
        return confirmed
    }

    /// Puts a published, unstarted attempt back in the queue, giving back what it held (no call
    /// was made). Its place is that of its admission, ahead of attempts that began waiting later;
    /// the copy in RabbitMQ is dropped by the worker whose claim was refused.
    func requeue(_ activity: inout ActivityRecord, in run: LiveRun, _ work: inout Work) {
        release(activity.attemptKey, outcomes: [], now: work.now)
        deleteTimers([.scheduleToStart], of: activity, in: run, &work)
        activity.state = .waiting
        activity.waitingSince = activity.attemptScheduledAt
        admission.queue.add(waitingEntry(activity, in: run))
        metrics.requeued(activity)
        save(activity, in: run, &work)
    }

    /// Whether a failed attempt waits for capacity instead of its retry policy's backoff: a
    /// rate-limited LLM call while the coordinator admits by capacity, unless the policy makes
    /// the type non-retryable or the schedule-to-close deadline has passed.
    func waitsForCapacity(after failure: Failure, _ activity: ActivityRecord, deadline: Date?, now: Date) -> Bool {
        configuration.capacity.enabled && isLLMCall(activity) && failure.type == "LLMRateLimited"
            && !activity.options.retryPolicy.nonRetryableErrorTypes.contains(failure.type)
            && deadline.map { now < $0 } ?? true
    }

    /// Admits what waits if the last pass is at least `interval` old: capacity refills with time.
    public func admitWaitingIfDue(interval: Double = 0.1) async throws {
        guard !admission.queue.isEmpty, clock.now().timeIntervalSince(admission.lastPass) >= interval else { return }
        var work = Work(now: clock.now())
        try await finish(&work)
    }

    /// How many attempts wait for capacity.
    public var waitingForCapacity: Int { admission.queue.count }

    /// Writes what was learned of the providers' capacity that is not in the store yet (a
    /// stopping coordinator, so that its successor knows it).
    public func saveCapacity() async throws {
        admission.lastPersisted = .distantPast
        var work = Work(now: clock.now())
        try await finish(&work)
    }

    /// Writes the providers' capacity to the store at most once a second, with the work.
    func persistCapacity(_ work: inout Work) {
        guard !admission.dirty.isEmpty, work.now.timeIntervalSince(admission.lastPersisted) >= 1 else { return }
        for provider in admission.dirty.sorted() {
            let capacity = withCapacity(of: provider, now: work.now) { capacity in
                capacity.refill(work.now)
                return capacity
            }
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
    /// published attempt holds.
    func readmit(_ activities: [(ActivityRecord, LiveRun)], now: Date) {
        for (activity, run) in activities {
            switch activity.state {
            case .waiting:
                admission.queue.add(waitingEntry(activity, in: run))
            case .scheduled, .started:
                guard needsAdmission(activity, in: run) else { continue }
                let provider = activity.route?.first
                let request = llmRequest(of: activity)
                let reserve =
                    activity.options.countsAgainstBudget && run.record.options.budget != nil
                    ? estimate(activity, request: request, provider: provider) : .zero
                hold(
                    activity, in: run, provider: provider, demand: provider.map { demand(of: request, at: $0) },
                    reserve: reserve, now: now, taking: false)
            case .backoff, .parked:
                continue
            }
        }
    }
}

extension ActivityRecord {
    /// The attempt key of the current attempt (as ``ActivityTask/attemptKey``).
    var attemptKey: String { ActivityTask.attemptKey(runId: runId, activityId: activityId, attempt: attempt) }
}
