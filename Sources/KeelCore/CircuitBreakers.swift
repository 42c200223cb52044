import Foundation
import Synchronization

/// When a provider's breaker opens and how long it stays open.
public struct CircuitBreakerPolicy: Codable, Sendable, Hashable {
    /// Consecutive failed calls that open the breaker.
    public var failureThreshold: Int
    /// Seconds the breaker stays open before one probe call is let through.
    public var cooldown: Double

    public init(failureThreshold: Int = 5, cooldown: Duration = .seconds(30)) {
        self.failureThreshold = failureThreshold
        self.cooldown = cooldown.seconds
    }
}

/// Where a provider's breaker stands.
public enum CircuitState: String, Codable, Sendable {
    /// Calls go through; consecutive failures are counted.
    case closed
    /// Calls fail fast (or go to the next provider) until the cooldown has passed.
    case open
    /// One probe call is out; its outcome closes or re-opens the breaker.
    case halfOpen
}

/// One breaker's state, as `keel breakers` shows it.
public struct CircuitBreakerSnapshot: Codable, Sendable, Hashable {
    public var provider: String
    public var state: CircuitState
    public var consecutiveFailures: Int
    public var openedAt: Date?
    /// When an open breaker lets its probe through.
    public var retryAt: Date?
    public var totalFailures: Int
    public var totalSuccesses: Int
    public var rejected: Int
}

/// What a breaker decided for one call.
public enum CircuitDecision: String, Codable, Sendable, Hashable {
    case allow
    /// The cooldown passed: this call is the probe.
    case probe
    case reject
}

/// The breakers' answer for one call, as a workflow's history records it.
public struct CircuitGate: Codable, Sendable, Hashable {
    /// The providers asked about, in failover order.
    public var providers: [String]
    /// One decision per provider.
    public var decisions: [CircuitDecision]

    public init(providers: [String], decisions: [CircuitDecision]) {
        self.providers = providers
        self.decisions = decisions
    }

    /// The providers the call may use, in order.
    public var admitted: [String] { zip(providers, decisions).filter { $0.1 != .reject }.map(\.0) }
}

/// Circuit breakers per provider, shared by every workflow run of a coordinator.
///
/// Workflow code asks before dispatching (``admit(_:now:)``); the decision is recorded in the
/// run's history, so replay never consults live breaker state. The coordinator feeds every
/// activity attempt's per-provider outcomes back (``observe(_:)``): results and failure details
/// that list `tries` (`[{"provider": "primary", "ok": false}, …]`) count, so the breakers learn
/// from failed attempts that were retried too. Failures marked `"providerFault": false` (a bad
/// request, a rate limit) do not count.
public final class CircuitBreakers: Sendable {
    public let policy: CircuitBreakerPolicy
    private let state = Mutex<[String: Breaker]>([:])
    private let onChange: @Sendable (CircuitBreakerSnapshot) -> Void

    struct Breaker {
        var state = CircuitState.closed
        var consecutiveFailures = 0
        var openedAt: Date?
        var probeSentAt: Date?
        var totalFailures = 0
        var totalSuccesses = 0
        var rejected = 0

        func snapshot(_ provider: String, policy: CircuitBreakerPolicy) -> CircuitBreakerSnapshot {
            CircuitBreakerSnapshot(
                provider: provider, state: state, consecutiveFailures: consecutiveFailures, openedAt: openedAt,
                retryAt: state == .open ? openedAt?.addingTimeInterval(policy.cooldown) : nil,
                totalFailures: totalFailures, totalSuccesses: totalSuccesses, rejected: rejected)
        }
    }

    /// `onChange` runs (under no lock of ours) whenever a breaker changes state.
    public init(
        policy: CircuitBreakerPolicy = .init(), onChange: @escaping @Sendable (CircuitBreakerSnapshot) -> Void = { _ in }
    ) {
        self.policy = policy
        self.onChange = onChange
    }

    /// Decides whether a call to `provider` may go out now.
    public func admit(_ provider: String, now: Date = Date()) -> CircuitDecision {
        let (decision, changed) = state.withLock { breakers -> (CircuitDecision, CircuitBreakerSnapshot?) in
            var breaker = breakers[provider] ?? Breaker()
            defer { breakers[provider] = breaker }
            switch breaker.state {
            case .closed:
                return (.allow, nil)
            case .open, .halfOpen:
                // A half-open breaker whose probe never reported lets another probe through after
                // a further cooldown.
                let since = breaker.state == .open ? breaker.openedAt : breaker.probeSentAt
                if let since, now.timeIntervalSince(since) >= policy.cooldown {
                    breaker.state = .halfOpen
                    breaker.probeSentAt = now
                    return (.probe, breaker.snapshot(provider, policy: policy))
                }
                breaker.rejected += 1
                return (.reject, nil)
            }
        }
        if let changed { onChange(changed) }
        return decision
    }

    /// Counts the outcome of one call to `provider`.
    public func record(_ provider: String, success: Bool, now: Date = Date()) {
        let changed = state.withLock { breakers -> CircuitBreakerSnapshot? in
            var breaker = breakers[provider] ?? Breaker()
            defer { breakers[provider] = breaker }
            let before = breaker.state
            if success {
                breaker.totalSuccesses += 1
                breaker.consecutiveFailures = 0
                breaker.state = .closed
                breaker.openedAt = nil
                breaker.probeSentAt = nil
            } else {
                breaker.totalFailures += 1
                breaker.consecutiveFailures += 1
                if breaker.state == .halfOpen
                    || (breaker.state == .closed && breaker.consecutiveFailures >= policy.failureThreshold)
                {
                    breaker.state = .open
                    breaker.openedAt = now
                    breaker.probeSentAt = nil
                }
            }
            return breaker.state != before ? breaker.snapshot(provider, policy: policy) : nil
        }
        if let changed { onChange(changed) }
    }

    /// Counts the per-provider outcomes an activity attempt event reports (its `tries`).
    public func observe(_ event: HistoryEvent, now: Date = Date()) {
        for outcome in ProviderOutcome.reported(by: event) where outcome.ok || (outcome.providerFault ?? true) {
            record(outcome.provider, success: outcome.ok, now: now)
        }
    }

    /// Whether ``admit(_:now:)`` would let a call to `provider` through now (as a call or a
    /// probe), without counting anything.
    public func wouldAdmit(_ provider: String, now: Date = Date()) -> Bool {
        state.withLock { breakers in
            guard let breaker = breakers[provider], breaker.state != .closed else { return true }
            let since = breaker.state == .open ? breaker.openedAt : breaker.probeSentAt
            return since.map { now.timeIntervalSince($0) >= policy.cooldown } ?? true
        }
    }

    /// Takes up the states a previous coordinator recorded (`keel breakers`), so that a restart
    /// does not close every breaker: an open one stays open for the rest of its cooldown.
    public func restore(_ snapshots: [CircuitBreakerSnapshot]) {
        state.withLock { breakers in
            for snapshot in snapshots {
                var breaker = Breaker()
                breaker.state = snapshot.state
                breaker.consecutiveFailures = snapshot.consecutiveFailures
                breaker.openedAt = snapshot.openedAt
                // A probe in flight before the restart is lost: the next may go after a cooldown.
                if snapshot.state == .halfOpen { breaker.probeSentAt = snapshot.openedAt ?? Date() }
                breaker.totalFailures = snapshot.totalFailures
                breaker.totalSuccesses = snapshot.totalSuccesses
                breaker.rejected = snapshot.rejected
                breakers[snapshot.provider] = breaker
            }
        }
    }

    /// Where `provider`'s breaker stands, without deciding anything.
    public func state(of provider: String) -> CircuitState {
        state.withLock { $0[provider]?.state ?? .closed }
    }

    /// Every breaker that has seen a call, by provider name.
    public func snapshots() -> [CircuitBreakerSnapshot] {
        state.withLock { breakers in
            breakers.keys.sorted().map { breakers[$0]!.snapshot($0, policy: policy) }
        }
    }
}

/// One call to a downstream provider within an activity attempt, as results and failure details
/// report it under `tries`.
public struct ProviderOutcome: Codable, Sendable, Hashable {
    public var provider: String
    public var ok: Bool
    /// For a failed call: whether it says the provider is unwell (5xx, overload, timeout,
    /// connection). Client errors and rate limits say `false` and leave the breaker alone.
    /// Absent: a fault.
    public var providerFault: Bool?
    /// The error type of a failed call (`LLMRateLimited`, …).
    public var errorType: String?
    /// Tokens and cost the call consumed, as far as it reported them.
    public var usage: Spend?
    /// What the provider's response headers said about the caller's rate limits.
    public var limits: RateLimitReading?

    public init(
        provider: String, ok: Bool, providerFault: Bool? = nil, errorType: String? = nil, usage: Spend? = nil,
        limits: RateLimitReading? = nil
    ) {
        self.provider = provider
        self.ok = ok
        self.providerFault = providerFault
        self.errorType = errorType
        self.usage = usage
        self.limits = limits
    }

    private static let triesKey = Payload.quotedKey("tries")

    /// The outcomes an activity attempt event reports, in call order.
    public static func reported(by event: HistoryEvent) -> [ProviderOutcome] {
        reported(in: event.attemptReport)
    }

    /// The `tries` of a JSON object payload, if it has them.
    public static func reported(in payload: Payload?) -> [ProviderOutcome] {
        guard let payload, payload.mentions(triesKey) else { return [] }
        struct Carrier: Decodable { var tries: [ProviderOutcome]? }
        return (try? JSONDecoder().decode(Carrier.self, from: payload.data))?.tries ?? []
    }
}
