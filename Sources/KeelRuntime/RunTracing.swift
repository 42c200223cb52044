import Foundation
import KeelCore
import Tracing

/// Traces of workflow runs, through swift-distributed-tracing (whatever tracer the process
/// bootstrapped; `keel` installs swift-otel's OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set; otherwise the coordinator makes no run spans).
///
/// One trace per run: the coordinator holds a `workflow <type>` span while the run is live in
/// it, and every activity task carries that span's context in its `trace` field and in its AMQP
/// headers (W3C `traceparent` with OpenTelemetry); the worker continues it with one
/// `activity <type>` span per attempt. The run span's parent is derived from the run id
/// (``TraceIdentity``), so with a W3C tracer a coordinator restarted after a crash continues the
/// same trace id.
enum RunTracing {
    /// Span attribute names (OpenTelemetry's `gen_ai.*` where one exists).
    enum Attribute {
        static let workflowId = "keel.workflow.id"
        static let workflowType = "keel.workflow.type"
        static let runId = "keel.run.id"
        static let status = "keel.workflow.status"
        static let activityType = "keel.activity.type"
        static let activityId = "keel.activity.id"
        static let attempt = "keel.activity.attempt"
        static let taskQueue = "keel.task_queue"
        static let worker = "keel.worker"
        static let outcome = "keel.activity.outcome"
        static let errorType = "error.type"
        static let provider = "gen_ai.provider.name"
        static let model = "gen_ai.request.model"
        static let inputTokens = "gen_ai.usage.input_tokens"
        static let outputTokens = "gen_ai.usage.output_tokens"
        static let costUSD = "keel.cost_usd"
    }

    /// The context a run's span starts from: the run's derived W3C parent, for tracers that
    /// read `traceparent`; the top level for others.
    static func parentContext(runId: String, tracer: any Tracer) -> InstrumentationContext {
        var context = InstrumentationContext.topLevel
        tracer.extract(["traceparent": TraceIdentity.traceparent(runId: runId)], into: &context, using: HeaderExtractor())
        return context
    }

    /// The span of a run live in this coordinator; nil without a tracer set up (no span to keep
    /// and no context to carry: making one on the no-op tracer anyway was 1.3 % of the
    /// coordinator's CPU in `bench throughput`).
    static func startRunSpan(_ record: RunRecord, tracer: any Tracer) -> (any Span)? {
        if tracer is NoOpTracer { return nil }
        let span = tracer.startSpan(
            "workflow \(record.workflowType)", context: parentContext(runId: record.runId, tracer: tracer), ofKind: .internal,
            at: EpochInstant(record.createdAt))
        span.attributes[Attribute.workflowId] = record.workflowId
        span.attributes[Attribute.workflowType] = record.workflowType
        span.attributes[Attribute.runId] = record.runId
        return span
    }

    static func endRunSpan(_ span: any Span, _ record: RunRecord, at time: Date) {
        span.attributes[Attribute.status] = record.status.rawValue
        if !record.spend.isZero {
            span.attributes[Attribute.inputTokens] = Int(record.spend.inputTokens)
            span.attributes[Attribute.outputTokens] = Int(record.spend.outputTokens)
            span.attributes[Attribute.costUSD] = record.spend.costUSD
        }
        if let failure = record.failure {
            span.attributes[Attribute.errorType] = failure.type
            span.setStatus(SpanStatus(code: .error, message: failure.message))
        }
        span.end(at: EpochInstant(time))
    }

    /// The headers that carry `span`'s context to a worker.
    static func headers(of span: any Span, tracer: any Tracer) -> [String: String] {
        var carrier: [String: String] = [:]
        tracer.inject(span.context, into: &carrier, using: HeaderInjector())
        return carrier
    }

    /// A worker's span for one attempt of `task`, continuing the context in the task message's
    /// headers (the coordinator's publisher copies the task's `trace` into them); nil without a
    /// tracer set up (making one on the no-op tracer, with its attributes, was 3.3 % of a
    /// worker's CPU in `bench throughput`).
    static func startAttemptSpan(
        _ task: ActivityTask, headers: [String: String], worker: String, tracer: any Tracer
    ) -> (any Span)? {
        if tracer is NoOpTracer { return nil }
        var context = InstrumentationContext.topLevel
        tracer.extract(headers, into: &context, using: HeaderExtractor())
        let span = tracer.startSpan("activity \(task.activityType)", context: context, ofKind: .consumer)
        span.attributes[Attribute.workflowId] = task.workflowId
        span.attributes[Attribute.workflowType] = task.workflowType
        span.attributes[Attribute.runId] = task.runId
        span.attributes[Attribute.activityType] = task.activityType
        span.attributes[Attribute.activityId] = Int(task.activityId)
        span.attributes[Attribute.attempt] = task.attempt
        span.attributes[Attribute.taskQueue] = task.taskQueue
        span.attributes[Attribute.worker] = worker
        return span
    }

    /// Ends an attempt's span with what its report says: outcome, error type, and for LLM calls
    /// the provider, model, tokens and cost.
    static func endAttemptSpan(_ span: (any Span)?, result: Payload?, failure: Failure?) {
        guard let span else { return }
        // Not recording (a sampler said no): no decoding on the worker's hot path.
        if span.isRecording, let report = result ?? failure?.details {
            if let spend = Spend.reported(in: report) {
                span.attributes[Attribute.inputTokens] = Int(spend.inputTokens)
                span.attributes[Attribute.outputTokens] = Int(spend.outputTokens)
                span.attributes[Attribute.costUSD] = spend.costUSD
            }
            if let answered = AnsweringModel.reported(in: report) {
                if let provider = answered.provider { span.attributes[Attribute.provider] = provider }
                if let model = answered.model { span.attributes[Attribute.model] = model }
            }
        }
        if let failure {
            span.attributes[Attribute.outcome] = "failed"
            span.attributes[Attribute.errorType] = failure.type
            span.setStatus(SpanStatus(code: .error, message: failure.message))
        } else {
            span.attributes[Attribute.outcome] = "completed"
        }
        span.end()
    }

    /// `provider` and `model` keys of an LLM activity's result or failure details.
    struct AnsweringModel: Decodable {
        var provider: String?
        var model: String?
        private static let key = Payload.quotedKey("provider")

        static func reported(in payload: Payload) -> AnsweringModel? {
            guard payload.mentions(key) else { return nil }
            return try? JSONDecoder().decode(AnsweringModel.self, from: payload.data)
        }
    }
}

/// Trace context in string headers (AMQP headers, a task's `trace`).
struct HeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}

struct HeaderExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}

/// A point in time for span timestamps taken from recorded history.
struct EpochInstant: TracerInstant {
    let nanosecondsSinceEpoch: UInt64
    init(_ date: Date) { nanosecondsSinceEpoch = UInt64(max(date.timeIntervalSince1970, 0) * 1e9) }
    static func < (lhs: EpochInstant, rhs: EpochInstant) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}
