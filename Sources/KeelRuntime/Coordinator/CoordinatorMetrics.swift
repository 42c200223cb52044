import Foundation
import KeelCore
import Metrics

/// What the coordinator reports through swift-metrics. Keel never bootstraps a backend; `keel
/// coordinator --http-port` exposes these in the Prometheus format (names in
/// docs/operations.md).
struct CoordinatorMetrics: Sendable {
    func workflowStarted(type: String) {
        Counter(label: "keel_workflows_started_total", dimensions: [("workflow_type", type)]).increment()
    }

    func workflowClosed(type: String, status: RunStatus, historyLength: Int64) {
        Counter(label: "keel_workflows_closed_total", dimensions: [("workflow_type", type), ("status", status.rawValue)])
            .increment()
        Recorder(label: "keel_workflow_history_events", dimensions: [("workflow_type", type)]).record(historyLength)
    }

    func attemptStarted(_ activity: ActivityRecord, now: Date) {
        Counter(label: "keel_activity_attempts_total", dimensions: dimensions(activity)).increment()
        Timer(label: "keel_activity_schedule_to_start_seconds", dimensions: [("task_queue", activity.options.taskQueue)])
            .recordSeconds(max(now.timeIntervalSince(activity.attemptScheduledAt), 0))
    }

    func attemptCompleted(_ activity: ActivityRecord, now: Date) {
        guard let started = activity.startedAt else { return }
        Timer(label: "keel_activity_execution_seconds", dimensions: [("task_queue", activity.options.taskQueue)])
            .recordSeconds(max(now.timeIntervalSince(started), 0))
    }

    func attemptFailed(_ activity: ActivityRecord, failure: Failure, willRetry: Bool) {
        Counter(
            label: "keel_activity_failures_total",
            dimensions: [("activity_type", activity.activityType), ("error_type", failure.type)]
        ).increment()
        if let kind = failure.timeoutKind {
            Counter(
                label: "keel_activity_timeouts_total",
                dimensions: [("activity_type", activity.activityType), ("kind", kind.rawValue)]
            ).increment()
        }
        if willRetry {
            Counter(label: "keel_activity_retries_total", dimensions: [("activity_type", activity.activityType)]).increment()
        }
    }

    /// An attempt left the admission queue for its task queue (and its provider).
    func admitted(_ activity: ActivityRecord, provider: String?, waited: Double) {
        Timer(
            label: "keel_llm_admission_wait_seconds",
            dimensions: [("task_queue", activity.options.taskQueue), ("provider", provider ?? "")]
        ).recordSeconds(waited)
    }

    /// A published attempt went back to waiting: its provider lost the room before a worker took it.
    func requeued(_ activity: ActivityRecord) {
        Counter(label: "keel_admission_requeued_total", dimensions: [("task_queue", activity.options.taskQueue)]).increment()
    }

    func waiting(_ count: Int) {
        Gauge(label: "keel_admission_waiting").record(Double(count))
    }

    func rateLimited(provider: String) {
        Counter(label: "keel_llm_rate_limited_total", dimensions: [("provider", provider)]).increment()
    }

    func capacity(provider: String, remaining: [(CapacityKind, Double)]) {
        for (kind, value) in remaining {
            Gauge(label: "keel_llm_capacity_remaining", dimensions: [("provider", provider), ("kind", kind.rawValue)])
                .record(value)
        }
    }

    func deadLettered(_ activity: ActivityRecord, parked: Bool) {
        Counter(label: "keel_activities_dead_lettered_total", dimensions: dimensions(activity)).increment()
        if parked {
            Counter(label: "keel_activities_parked_total", dimensions: dimensions(activity)).increment()
        }
    }

    func spent(_ spend: Spend, workflowType: String) {
        Counter(label: "keel_llm_tokens_total", dimensions: [("workflow_type", workflowType), ("direction", "input")])
            .increment(by: Int64(spend.inputTokens))
        Counter(label: "keel_llm_tokens_total", dimensions: [("workflow_type", workflowType), ("direction", "output")])
            .increment(by: Int64(spend.outputTokens))
        FloatingPointCounter(label: "keel_llm_cost_usd_total", dimensions: [("workflow_type", workflowType)])
            .increment(by: spend.costUSD)
    }

    func breaker(_ snapshot: CircuitBreakerSnapshot) {
        let value: Double
        switch snapshot.state {
        case .closed: value = 0
        case .halfOpen: value = 1
        case .open: value = 2
        }
        Gauge(label: "keel_circuit_breaker_state", dimensions: [("provider", snapshot.provider)]).record(value)
    }

    /// A worker report the coordinator refused (`not_holder`: a result in the name of a worker
    /// that does not hold the attempt).
    func reportRefused(reason: String) {
        Counter(label: "keel_reports_refused_total", dimensions: [("reason", reason)]).increment()
    }

    /// A run blocked because its workflow code crashed the coordinator twice in a row.
    func quarantined() {
        Counter(label: "keel_workflows_quarantined_total").increment()
    }

    func recovered(runs: Int, events: Int, seconds: Double) {
        Timer(label: "keel_replay_duration_seconds").recordSeconds(seconds)
        Gauge(label: "keel_open_runs_recovered").record(Double(runs))
        Gauge(label: "keel_history_events_replayed").record(Double(events))
    }

    private func dimensions(_ activity: ActivityRecord) -> [(String, String)] {
        [("activity_type", activity.activityType), ("task_queue", activity.options.taskQueue)]
    }
}

extension Timer {
    func recordSeconds(_ seconds: Double) {
        recordNanoseconds(Int64((seconds * 1e9).rounded()))
    }
}
