import Foundation
import KeelCore

/// The LLM call as an activity (`llm.complete`), for workers of the `llm` queue (or a `gpu`
/// queue in front of a local model server).
///
/// A failed attempt is thrown as an `ApplicationError` whose type is the ``LLMErrorKind`` name,
/// non-retryable for client errors, carrying `Retry-After` as the next retry delay and
/// ``LLMFailureDetails`` (usage, every call) as details.
///
/// ```swift
/// var activities = ActivityRegistry()
/// activities.register(LLMCompleteActivity(client: LLMClient(configuration: configuration)))
/// ```
public struct LLMCompleteActivity: Activity {
    public static let name = "llm.complete"
    public let client: LLMClient

    public init(client: LLMClient) {
        self.client = client
    }

    /// What a streaming attempt heartbeats with.
    public struct Progress: Codable, Sendable, Hashable {
        public var provider: String
        public var chunks: Int
    }

    public func run(context: ActivityContext, input: LLMRequest) async throws -> LLMResponse {
        var input = input
        // The coordinator chose this attempt's providers (breakers, capacity) from the request's.
        if let providers = context.task.providers, !providers.isEmpty { input.providers = providers }
        do {
            let response = try await call(context: context, input: input)
            LLMMetrics.record(response.tries)
            return response
        } catch let failure as LLMAttemptFailure {
            LLMMetrics.record(failure.tries)
            let error = failure.error
            let details = LLMFailureDetails(
                provider: error.provider, model: error.model, status: error.status, usage: failure.usage, tries: failure.tries)
            throw ApplicationError(
                message: failure.description, type: error.kind.rawValue, isNonRetryable: !error.kind.isRetryable,
                nextRetryDelay: failure.retryAfter.map { .seconds(double: $0) },
                details: try? Payload(encoding: details, field: "LLM failure details"))
        }
    }

    private func call(context: ActivityContext, input: LLMRequest) async throws -> LLMResponse {
        if input.isStreaming {
            // Heartbeats only as chunks arrive: a provider that stops sending is caught by
            // the heartbeat timeout.
            return try await client.complete(input) { provider, chunks in
                context.heartbeat(Progress(provider: provider, chunks: chunks))
            }
        }
        // A non-streaming call sends nothing until it is done: heartbeat while this worker
        // waits, so the heartbeat timeout still catches a dead worker; the provider's request
        // timeout bounds the wait.
        let interval = min((context.task.heartbeatTimeout ?? 30) / 3, 10)
        let ticker = Task {
            while !Task.isCancelled {
                context.heartbeat()
                try await Task.sleep(for: .seconds(double: interval))
            }
        }
        defer { ticker.cancel() }
        return try await client.complete(input)
    }
}
