import Metrics

/// What the LLM activity reports through swift-metrics, per provider and model: on the worker's
/// `/metrics` (`keel worker --metrics-port`), names in docs/operations.md.
enum LLMMetrics {
    /// Counts every call of an attempt (failover tries included): calls by outcome, tokens,
    /// dollars and call duration.
    static func record(_ tries: [LLMTry]) {
        for call in tries {
            let labels = [("provider", call.provider), ("model", call.model)]
            Counter(label: "keel_llm_calls_total", dimensions: labels + [("outcome", call.ok ? "ok" : call.errorType ?? "error")])
                .increment()
            Timer(label: "keel_llm_call_duration_seconds", dimensions: labels)
                .recordNanoseconds(Int64(call.durationMs) * 1_000_000)
            guard let usage = call.usage else { continue }
            Counter(label: "keel_llm_provider_tokens_total", dimensions: labels + [("direction", "input")])
                .increment(by: usage.inputTokens)
            Counter(label: "keel_llm_provider_tokens_total", dimensions: labels + [("direction", "output")])
                .increment(by: usage.outputTokens)
            FloatingPointCounter(label: "keel_llm_provider_cost_usd_total", dimensions: labels).increment(by: usage.costUSD)
        }
    }
}
