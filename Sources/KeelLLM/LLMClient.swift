import Foundation
import KeelCore
import Synchronization

/// All calls of one attempt failed (or one failed in a way no other provider can fix).
public struct LLMAttemptFailure: Error, Sendable, CustomStringConvertible {
    /// The failure that ended the attempt: the last call's.
    public var error: LLMError
    public var tries: [LLMTry]
    /// Usage of every call of the attempt.
    public var usage: LLMUsage
    /// The longest delay a rate-limited call asked for.
    public var retryAfter: Double?

    public var description: String {
        tries.count > 1
            ? "\(error) (after \(tries.count) calls: \(tries.map { "\($0.provider) \($0.errorType ?? "ok")" }.joined(separator: ", ")))"
            : "\(error)"
    }
}

/// Calls LLM providers over libcurl. It never retries on its own: within one attempt it tries
/// each provider of the chain once, moving on only after a retryable failure (rate limit, 5xx,
/// overload, timeout, connection or stream failure); the engine's retry policy does the rest.
///
/// ```swift
/// let client = LLMClient(configuration: try LLMConfiguration.load(path: "keel.yaml"))
/// let answer = try await client.complete(LLMRequest(prompt: "Summarise: …"))
/// ```
public struct LLMClient: Sendable {
    public let configuration: LLMConfiguration
    private let http = CurlHTTPClient()
    private let environment: [String: String]

    public init(configuration: LLMConfiguration, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.configuration = configuration
        self.environment = environment
    }

    /// Calls the request's providers (or the configured chain) in order until one answers.
    /// `onChunk` runs for every streamed chunk with the provider's name and the chunk count.
    /// Throws ``LLMAttemptFailure``.
    public func complete(
        _ request: LLMRequest, onChunk: @escaping @Sendable (_ provider: String, _ chunks: Int) -> Void = { _, _ in }
    ) async throws -> LLMResponse {
        let names = request.providers ?? configuration.chain
        var tries: [LLMTry] = []
        var usage = LLMUsage.zero
        var retryAfter: Double?
        var lastError = LLMError(
            .notConfigured, "no LLM provider is configured on this worker (keel.yaml `llm:` or KEEL_LLM_BASE_URL)")
        for name in names {
            guard let provider = configuration.provider(named: name) else {
                lastError = LLMError(
                    .notConfigured,
                    "no provider named '\(name)' is configured on this worker (configured: \(configuration.chain.joined(separator: ", ")))",
                    provider: name)
                break
            }
            let started = ContinuousClock.now
            let (outcome, limits) = await call(request, provider: provider, onChunk: onChunk)
            let duration = started.duration(to: .now)
            let milliseconds = Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
            switch outcome {
            case .success(let (completion, callUsage)):
                usage = usage + callUsage
                tries.append(
                    LLMTry(
                        provider: name, model: completion.model ?? provider.model, ok: true, status: 200,
                        durationMs: milliseconds,
                        usage: callUsage, limits: limits))
                return LLMResponse(
                    text: completion.text, provider: name, model: completion.model ?? provider.model,
                    finishReason: completion.finishReason, usage: usage, tries: tries)
            case .failure(let error):
                if let callUsage = error.usage { usage = usage + callUsage }
                if let delay = error.retryAfter ?? (error.kind == .rateLimited ? limits?.waitSeconds : nil) {
                    retryAfter = max(retryAfter ?? 0, delay)
                }
                tries.append(
                    LLMTry(
                        provider: name, model: provider.model, ok: false, status: error.status, errorType: error.kind.rawValue,
                        providerFault: error.kind.isProviderFault, message: error.message, durationMs: milliseconds,
                        usage: error.usage, limits: limits))
                lastError = error
            }
            // Another provider cannot fix a bad request; a cancelled attempt stops here.
            if !lastError.kind.isRetryable || Task.isCancelled { break }
        }
        throw LLMAttemptFailure(error: lastError, tries: tries, usage: usage, retryAfter: retryAfter)
    }

    /// One call to one provider, and what its response headers said about rate limits.
    private func call(
        _ request: LLMRequest, provider: LLMProviderConfiguration,
        onChunk: @escaping @Sendable (String, Int) -> Void
    ) async -> (Result<(Completion, LLMUsage), LLMError>, RateLimitReading?) {
        let limits = LimitsSeen()
        let outcome = await attempt(request, provider: provider, limits: limits, onChunk: onChunk)
        return (outcome, limits.reading.withLock { $0 })
    }

    private func attempt(
        _ request: LLMRequest, provider: LLMProviderConfiguration, limits: LimitsSeen,
        onChunk: @escaping @Sendable (String, Int) -> Void
    ) async -> Result<(Completion, LLMUsage), LLMError> {
        let wire = provider.api.wire
        let httpRequest: HTTPRequest
        do {
            httpRequest = try wire.httpRequest(
                for: request, provider: provider, apiKey: try provider.apiKey(environment: environment))
        } catch let error as LLMError {
            return .failure(error)
        } catch {
            return .failure(
                LLMError(.badRequest, "cannot encode the request: \(error)", provider: provider.name, model: provider.model))
        }
        let state = Mutex(CallState())
        let name = provider.name
        let head: HTTPResponseHead
        do {
            head = try await http.send(
                httpRequest,
                onHead: { head in
                    state.withLock { $0.status = head.status }
                    limits.reading.withLock { $0 = RateLimitHeaders.reading(head.headers) }
                },
                onBody: { chunk in
                    let chunks: Int? = state.withLock { state in
                        guard (200..<300).contains(state.status), request.isStreaming else {
                            state.body.append(chunk)
                            return nil
                        }
                        let before = state.progress.chunks
                        for event in state.parser.consume(chunk) { wire.consume(event, into: &state.progress) }
                        return state.progress.chunks > before ? state.progress.chunks : nil
                    }
                    if let chunks { onChunk(name, chunks) }
                })
        } catch let error as HTTPTransportError {
            let snapshot = state.withLock { $0 }
            var failure = LLMError(
                LLMErrorClassifier.kind(transport: error), error.message, provider: provider.name, model: provider.model,
                status: error.head?.status)
            if request.isStreaming, (200..<300).contains(snapshot.status) {
                failure.kind = error.kind == .timeout ? .timeout : .streamInterrupted
                failure.message = "the stream broke off after \(snapshot.progress.chunks) chunk(s): \(error.message)"
                failure.usage = usage(of: snapshot.progress.completion, request: request, provider: provider)
            }
            return .failure(failure)
        } catch {
            return .failure(LLMError(.connectionFailed, "\(error)", provider: provider.name, model: provider.model))
        }
        let snapshot = state.withLock { $0 }
        guard (200..<300).contains(head.status) else {
            let body = String(decoding: snapshot.body, as: UTF8.self)
            return .failure(
                LLMError(
                    LLMErrorClassifier.kind(status: head.status, body: body),
                    "HTTP \(head.status) from \(provider.name): \(LLMErrorClassifier.message(fromBody: snapshot.body))",
                    provider: provider.name, model: provider.model, status: head.status,
                    retryAfter: LLMErrorClassifier.retryAfter(head.headers)))
        }
        if request.isStreaming {
            let progress = snapshot.progress
            if let (kind, message) = progress.error {
                return .failure(
                    LLMError(
                        kind, "\(provider.name) reported in the stream: \(message)", provider: provider.name,
                        model: provider.model, status: head.status,
                        usage: usage(of: progress.completion, request: request, provider: provider)))
            }
            guard progress.finished else {
                return .failure(
                    LLMError(
                        .streamInterrupted,
                        "the stream from \(provider.name) ended after \(progress.chunks) chunk(s) without its end marker",
                        provider: provider.name, model: provider.model, status: head.status,
                        usage: usage(of: progress.completion, request: request, provider: provider)))
            }
            return .success((progress.completion, usage(of: progress.completion, request: request, provider: provider)))
        }
        do {
            let completion = try wire.parseResponse(snapshot.body)
            return .success((completion, usage(of: completion, request: request, provider: provider)))
        } catch var error as LLMError {
            error.provider = provider.name
            error.model = provider.model
            error.status = head.status
            return .failure(error)
        } catch {
            return .failure(
                LLMError(.invalidResponse, "\(error)", provider: provider.name, model: provider.model, status: head.status))
        }
    }

    /// Usage of a call, priced; counts the provider did not report are estimated.
    private func usage(of completion: Completion, request: LLMRequest, provider: LLMProviderConfiguration) -> LLMUsage {
        let estimated = completion.inputTokens == nil || completion.outputTokens == nil
        let input = completion.inputTokens ?? LLMUsage.estimate(characters: request.promptCharacters)
        let output = completion.outputTokens ?? LLMUsage.estimate(characters: completion.text.count)
        let price = configuration.price(of: completion.model ?? provider.model) ?? configuration.price(of: provider.model)
        return LLMUsage(
            inputTokens: input, outputTokens: output,
            costUSD: price?.cost(inputTokens: input, outputTokens: output) ?? 0, estimated: estimated ? true : nil)
    }
}

/// The rate-limit headers of one call's response (read on the transfer's thread).
private final class LimitsSeen: Sendable {
    let reading = Mutex<RateLimitReading?>(nil)
}

/// What one call has received so far (filled on the transfer's thread).
private struct CallState: Sendable {
    var status = 0
    var body = Data()
    var parser = ServerSentEventParser()
    var progress = StreamProgress()
}
