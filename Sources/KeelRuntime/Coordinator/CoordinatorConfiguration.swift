import KeelCore
import Tracing

/// Configuration of a coordinator.
public struct CoordinatorConfiguration: Sendable {
    /// Largest payload (input, result, signal) accepted, bytes.
    public var payloadLimit: Int = Payload.defaultSizeLimit
    /// What one message may carry (docs/protocol.md, "Limits").
    public var limits: MessageLimits { MessageLimits(payload: payloadLimit) }
    /// A run whose history passes this many events gets a warning suggesting continue-as-new.
    public var historyWarningThreshold: Int64 = 10_000
    /// How many due timers are handled per pass.
    public var timerBatchSize: Int = 500
    /// When a provider's circuit breaker opens and how long it stays open.
    public var circuitBreaker = CircuitBreakerPolicy()
    /// LLM provider names in failover order (from `keel.yaml`); workflows gate calls to them
    /// on their circuit breakers.
    public var providerChain: [String] = []
    /// Admission by capacity: providers' limits, task queue caps, fairness weights.
    public var capacity = CapacityConfiguration()
    /// A file the coordinator maps to name the run whose workflow code runs, so that a run that
    /// crashes the coordinator twice in a row is quarantined (nil: no quarantine).
    public var crashMarkerPath: String?
    /// The epoch this coordinator took of its history (``SQLiteHistoryStore/takeEpoch(holder:)``),
    /// stamped on every task it publishes.
    public var epoch: Int64?
    /// The tracer for run spans (nil: the process's `InstrumentationSystem.tracer`).
    public var tracer: (any Tracer)?
    /// Where the coordinator counts the attempts running on each task queue (the queue
    /// monitor's, in a coordinator process).
    public var startedAttempts = StartedAttempts()

    public init() {}
}
