import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// `keel mock-llm`: an HTTP server speaking the Anthropic Messages and OpenAI Chat Completions
/// APIs (streaming included) that answers from a ``MockScenario`` — status sequences,
/// `Retry-After`, latency, hangs, streams cut mid-way — and logs every request for assertions.
///
/// Routes: `POST …/v1/messages` (Anthropic), `POST …/chat/completions` (OpenAI), under any path
/// prefix; `POST /_mock/scenario` replaces the scenario, `GET /_mock/requests` returns the log,
/// `POST /_mock/reset` clears the log and the sequences. `GET /documents/{id}` serves the
/// example pipelines' documents (from `documentsDirectory`, else generated text).
public struct MockLLMServer: Sendable {
    public let host: String
    public let port: Int
    let state: MockState
    let documentsDirectory: String?
    let logger: Logger

    public init(
        host: String = "127.0.0.1", port: Int, scenario: MockScenario = MockScenario(), documentsDirectory: String? = nil,
        logger: Logger = Logger(label: "keel.mock-llm")
    ) {
        self.host = host
        self.port = port
        self.state = MockState(scenario: scenario)
        self.documentsDirectory = documentsDirectory
        self.logger = logger
    }

    /// Bills the accounting endpoint holds.
    public func bills() async -> [MockBill] { await state.services.bills }

    /// Bookings the booking endpoint holds.
    public func bookings() async -> [MockBooking] { await state.services.bookings }

    /// Every request received since the last reset, oldest first.
    public func requests() async -> [MockRequestRecord] { await state.log }

    /// Replaces the scenario and clears the log and the sequences.
    public func setScenario(_ scenario: MockScenario) async { await state.replace(scenario) }

    /// Serves until the task is cancelled (or, with `handleSignals`, the process gets SIGTERM or
    /// SIGINT); `onListening` gets the bound port (useful with port 0).
    /// `stop`: ends the server gracefully when triggered (cancelling the task that runs it can
    /// crash a debug build: NIO traps on a connection accepted but not yet served, swift-nio
    /// issue 2813).
    public func run(
        handleSignals: Bool = true, stop: MockServerStop? = nil,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws {
        let router = Router(context: MockRequestContext.self)
        let state = self.state
        router.post("/_mock/scenario") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            do {
                let scenario = try MockScenario.decode(Data(buffer: body), source: "POST /_mock/scenario")
                await state.replace(scenario)
                return Self.json(["rules": scenario.rules.count], status: .ok)
            } catch let error as MockScenarioError {
                return Self.json(["error": error.message], status: .badRequest)
            }
        }
        router.get("/_mock/requests") { _, _ -> Response in
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .secondsSince1970
            encoder.outputFormatting = [.sortedKeys]
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(data: try encoder.encode(await state.log))))
        }
        router.post("/_mock/reset") { _, _ -> Response in
            await state.reset()
            return Self.json(["reset": true], status: .ok)
        }
        let documents = documentsDirectory
        router.get("/documents/:id") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let document = MockDocuments.document(id, directory: documents) else {
                return Self.json(["error": "no document \(id)"], status: .notFound)
            }
            return Response(
                status: .ok, headers: [.contentType: document.contentType],
                body: ResponseBody(byteBuffer: ByteBuffer(data: document.data)))
        }
        router.post("/accounting/bills") { request, _ -> Response in
            var request = request
            guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], !key.isEmpty else {
                return Self.json(["error": "an Idempotency-Key header is required"], status: .badRequest)
            }
            let body = try await request.collectBody(upTo: 1 << 20)
            return Self.answer(await state.postBill(key: key, body: Data(buffer: body)))
        }
        router.get("/accounting/bills") { _, _ -> Response in
            Self.encoded(await state.services.bills)
        }
        router.post("/bookings/:kind") { request, context -> Response in
            guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], !key.isEmpty else {
                return Self.json(["error": "an Idempotency-Key header is required"], status: .badRequest)
            }
            return Self.answer(await state.book(kind: context.parameters.get("kind") ?? "", key: key))
        }
        router.post("/cancellations/:id") { _, context -> Response in
            Self.answer(await state.cancel(id: context.parameters.get("id") ?? ""))
        }
        router.get("/bookings") { _, _ -> Response in
            Self.encoded(await state.services.bookings)
        }
        router.post("**") { request, context -> Response in
            try await Self.answer(request, context: context, state: state)
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "keel-mock-llm"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(
            services: [app], gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], cancellationSignals: [],
            logger: logger)
        await stop?.attach(group)
        try await group.run()
    }

    static func answer(_ answer: MockServicesState.Answer) -> Response {
        switch answer {
        case .created(let data):
            return Response(
                status: .created, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
        case .existing(let data):
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
        case .lost: return json(["error": "upstream timed out"], status: .badGateway)
        case .refused(let reason): return json(["error": reason], status: .conflict)
        }
    }

    static func encoded(_ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(data: (try? encoder.encode(value)) ?? Data("[]".utf8))))
    }

    static func json(_ object: [String: any Sendable], status: HTTPResponse.Status) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
    }

    // MARK: Answering provider calls

    static func answer(_ request: Request, context: MockRequestContext, state: MockState) async throws -> Response {
        let path = request.uri.path
        let api: MockAPI
        if path.hasSuffix("/v1/messages") {
            api = .anthropic
        } else if path.hasSuffix("/chat/completions") {
            api = .openai
        } else {
            return json(["error": "keel mock-llm serves …/v1/messages and …/chat/completions, not \(path)"], status: .notFound)
        }
        // Before anything is awaited: a client may give up at any moment from here on.
        let watcher = await InputClosedWatcher.install(on: context.channel)
        // A stream's answer goes on after this returns: its end removes the watcher.
        var streaming = false
        defer { if let watcher, !streaming { Task { await watcher.remove(from: context.channel) } } }
        var request = request
        let body = try await request.collectBody(upTo: 16 << 20)
        guard let call = MockCall(body: Data(buffer: body), api: api, path: path) else {
            return api.error(status: 400, message: "the request body is not a JSON \(api.rawValue) request", headers: [:])
        }
        let (response, record, index) = await state.respond(to: call)
        let status = response.status ?? 200
        let defaultText = await state.scenario.defaultText
        let text = response.text ?? defaultText ?? "Mock answer to: \(record.promptPreview)"
        var output = response.usage?.outputTokens ?? (text.count + 3) / 4
        if let low = response.usage?.outputTokens, let high = response.usage?.outputTokensMax {
            output = Int.random(in: low...high)
        }
        let usage = (input: response.usage?.inputTokens ?? (call.prompt.count + 3) / 4, output: output)
        // Rate limits: a request that does not fit is refused at once, as a provider does.
        let admission = await state.admit(
            call, input: usage.input, output: status == 200 ? usage.output : 0, record: index)
        var headers = admission.headers.merging(response.headers ?? [:]) { _, scenario in scenario }
        if let refusal = admission.refusal {
            headers[admission.prefix + "retry-after"] = String(refusal.wait)
            return api.error(status: 429, message: "rate limit exceeded: \(refusal.reason)", headers: headers)
        }
        defer { if let limiter = admission.limiter { Task { await state.finished(limiter) } } }
        var delay = response.delayMs ?? 0
        if let high = response.delayMsMax { delay = Int.random(in: delay...max(delay, high)) }
        if response.hang ?? false { delay = 3_600_000 }
        if delay > 0, let closedAt = await waitOrClosed(milliseconds: delay, watcher: watcher) {
            await state.closedEarly(index, at: closedAt)
            return api.error(status: 499, message: "the client closed the request", headers: headers)
        }
        if response.hang ?? false { return api.error(status: 504, message: "hung", headers: headers) }
        if let raw = response.body {
            return Response(
                status: .init(code: status), headers: api.fields(headers, contentType: "application/json"),
                body: ResponseBody(byteBuffer: ByteBuffer(string: raw)))
        }
        guard status == 200 else {
            return api.error(status: status, message: response.message ?? MockAPI.defaultMessage(status), headers: headers)
        }
        await state.answered(index, input: usage.input, output: usage.output)
        if call.stream {
            streaming = true
            // A client that hangs up mid-stream is logged when the event loop sees it.
            let completed = Mutex(false)
            watcher?.closed.futureResult.whenSuccess { date in
                if let date, !completed.withLock({ $0 }) { Task { await state.closedEarly(index, at: date) } }
            }
            return api.stream(text: text, model: call.model, usage: usage, response: response, headers: headers) { done in
                if done { completed.withLock { $0 = true } }
                if let watcher { await watcher.remove(from: context.channel) }
            }
        }
        return api.message(text: text, model: call.model, usage: usage, headers: headers)
    }

    /// Sleeps; or returns as soon as the client closes the connection (its side of it: the
    /// server allows half-closed connections, so the channel itself stays open), with the time
    /// the close was seen on the event loop.
    static func waitOrClosed(milliseconds: Int, watcher: InputClosedWatcher?) async -> Date? {
        let outcome = Mutex<CheckedContinuation<Date?, Never>?>(nil)
        let finish: @Sendable (Date?) -> Void = { value in
            outcome.withLock { continuation in
                continuation?.resume(returning: value)
                continuation = nil
            }
        }
        return await withCheckedContinuation { continuation in
            outcome.withLock { $0 = continuation }
            watcher?.closed.futureResult.whenSuccess { date in if let date { finish(date) } }
            Task {
                try? await Task.sleep(for: .milliseconds(milliseconds))
                finish(nil)
            }
        }
    }
}

/// Notices the peer closing its side of the connection, from the moment a request's head is in
/// (installed before anything is awaited, so that an early close is not missed).
final class InputClosedWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    /// When the peer closed (nil: the watcher was removed first).
    let closed: EventLoopPromise<Date?>
    private var done = false

    private init(closed: EventLoopPromise<Date?>) { self.closed = closed }

    /// Watches `channel` until ``remove(from:)``.
    static func install(on channel: any Channel) async -> InputClosedWatcher? {
        let watcher = InputClosedWatcher(closed: channel.eventLoop.makePromise())
        do {
            try await channel.pipeline.addHandler(watcher, position: .first).get()
            return watcher
        } catch {
            watcher.closed.succeed(nil)
            return nil
        }
    }

    func remove(from channel: any Channel) async { _ = try? await channel.pipeline.removeHandler(self).get() }

    /// On the channel's event loop only.
    private func finish(_ time: Date?) {
        guard !done else { return }
        done = true
        closed.succeed(time)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { finish(Date()) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(Date())
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { finish(nil) }
}

/// Hummingbird's basic context plus the connection, so that a delayed answer notices a client
/// that gave up.
struct MockRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The request fields the mock reads.
struct MockCall: Sendable {
    var api: MockAPI
    var path: String
    var model: String
    var stream: Bool
    var prompt: String
    var maxTokens: Int?

    init?(body: Data, api: MockAPI, path: String) {
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else { return nil }
        self.api = api
        self.path = path
        model = object["model"] as? String ?? ""
        stream = object["stream"] as? Bool ?? false
        maxTokens = object["max_tokens"] as? Int
        var parts: [String] = []
        if let system = object["system"] as? String { parts.append(system) }
        for message in object["messages"] as? [[String: Any]] ?? [] {
            if let content = message["content"] as? String { parts.append(content) }
        }
        prompt = parts.joined(separator: "\n")
    }

    /// FNV-1a 64, hex: tells prompts apart in the log without storing them.
    var promptDigest: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in prompt.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}

/// The scenario, the sequences' positions, and the request log.
actor MockState {
    private(set) var scenario: MockScenario
    private var positions: [String: Int] = [:]
    private(set) var log: [MockRequestRecord] = []
    private var limiters: [MockLimiter] = []

    init(scenario: MockScenario) {
        self.scenario = scenario
        limiters = (scenario.limits ?? []).map { MockLimiter($0, now: Date()) }
    }

    var services = MockServicesState()

    func replace(_ scenario: MockScenario) {
        self.scenario = scenario
        reset()
    }

    func reset() {
        positions = [:]
        log = []
        services = MockServicesState()
        limiters = (scenario.limits ?? []).map { MockLimiter($0, now: Date()) }
    }

    /// What the limits say to a request: the headers to send, and a refusal or the limiter
    /// that counts it in flight.
    func admit(
        _ call: MockCall, input: Int, output: Int, record: Int
    ) -> (headers: [String: String], refusal: (wait: Int, reason: String)?, limiter: Int?, prefix: String) {
        let now = Date()
        guard let index = limiters.firstIndex(where: { $0.limits.match?.matches(call) ?? true }) else {
            return ([:], nil, nil, "")
        }
        let refusal = limiters[index].admit(input: input, output: output, now: now)
        if refusal != nil, log.indices.contains(record) {
            log[record].status = 429
            log[record].rateLimited = true
        }
        return (
            limiters[index].headers(api: call.api, now: now), refusal, refusal == nil ? index : nil,
            limiters[index].limits.headerPrefix ?? ""
        )
    }

    func finished(_ limiter: Int) {
        if limiters.indices.contains(limiter) { limiters[limiter].finished() }
    }

    func answered(_ record: Int, input: Int, output: Int) {
        guard log.indices.contains(record) else { return }
        log[record].inputTokens = input
        log[record].outputTokens = output
    }

    func closedEarly(_ record: Int, at time: Date) {
        guard log.indices.contains(record) else { return }
        log[record].closedEarly = true
        log[record].closedAt = time
    }

    func postBill(key: String, body: Data) -> MockServicesState.Answer {
        services.postBill(key: key, body: body, scenario: scenario.services)
    }

    func book(kind: String, key: String) -> MockServicesState.Answer {
        services.book(kind: kind, key: key, scenario: scenario.services)
    }

    func cancel(id: String) -> MockServicesState.Answer { services.cancel(id: id) }

    func respond(to call: MockCall) -> (MockResponse, MockRequestRecord, Int) {
        var chosen: (rule: Int, position: Int, response: MockResponse)?
        for (index, rule) in scenario.rules.enumerated() where rule.matches(call) {
            let key = rule.sequencePer == "prompt" ? "\(index)/\(call.promptDigest)" : "\(index)"
            let position = min(positions[key, default: 0], rule.responses.count - 1)
            positions[key] = position + 1
            chosen = (index, position, rule.responses[position])
            break
        }
        let response = chosen?.response ?? MockResponse()
        let record = MockRequestRecord(
            time: Date(), api: call.api.rawValue, path: call.path, model: call.model, stream: call.stream,
            promptDigest: call.promptDigest, promptPreview: String(call.prompt.prefix(120)),
            status: response.hang == true ? 0 : response.status ?? 200, rule: chosen?.rule, response: chosen?.position)
        log.append(record)
        return (response, record, log.count - 1)
    }
}

extension MockRule {
    func matches(_ call: MockCall) -> Bool { match?.matches(call) ?? true }
}

extension MockMatch {
    func matches(_ call: MockCall) -> Bool {
        let match = self
        if let model = match.model, model != call.model { return false }
        if let api = match.api, api != call.api.rawValue { return false }
        if let prefix = match.pathPrefix, !call.path.hasPrefix(prefix) { return false }
        if let needle = match.promptContains, !call.prompt.contains(needle) { return false }
        return true
    }
}

/// Stops a stream by failing the response body, which makes the server drop the connection.
struct MockStreamCut: Error {}

/// Ends a ``MockLLMServer`` gracefully: open connections are served to their end.
public final class MockServerStop: Sendable {
    private let state = Mutex((group: ServiceGroup?.none, triggered: false))

    public init() {}

    /// Stops the server (at once if it was triggered before the server started).
    public func trigger() async {
        let group = state.withLock { state in
            state.triggered = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }

    func attach(_ group: ServiceGroup) async {
        let triggered = state.withLock { state in
            state.group = group
            return state.triggered
        }
        if triggered { await group.triggerGracefulShutdown() }
    }
}
