import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import Synchronization

/// `--http-host` and `--http-port` (coordinator) or `--metrics-port` (worker): where
/// `GET /metrics` answers in the Prometheus text format, and on the coordinator the console and
/// the JSON API (`routes`).
struct HTTPEndpoint: Sendable {
    let host: String
    let port: Int
    let registry = PrometheusCollectorRegistry()
    /// Routes served beside `/metrics`.
    var routes: @Sendable (Router<BasicRequestContext>) -> Void = { _ in }

    /// Routes swift-metrics to this endpoint's registry. Once per process, before any metric.
    func bootstrap() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// Serves `/metrics` until the task is cancelled.
    func run(logger: Logger) async throws {
        let router = Router()
        routes(router)
        let registry = self.registry
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 << 10)
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        var quiet = logger
        quiet.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "keel"),
            onServerRunning: { channel in
                logger.info("HTTP on http://\(host):\(channel.localAddress?.port ?? port)/ (metrics at /metrics)")
            }, logger: quiet)
        try await app.runService(gracefulShutdownSignals: [])
    }

    /// Runs `service` with the endpoint beside it (if one is configured); returns when the
    /// service does. An endpoint that cannot serve (its address cannot be bound) calls `stop`
    /// and, once the service returned, throws: the process exits non-zero instead of running on
    /// without the endpoint it was asked for.
    static func serve(
        _ endpoint: HTTPEndpoint?, logger: Logger, stop: @escaping @Sendable () -> Void,
        _ service: @escaping @Sendable () async throws -> Void
    ) async throws {
        guard let endpoint else { return try await service() }
        endpoint.bootstrap()
        let failure = Mutex<(any Error)?>(nil)
        let server = Task {
            do {
                try await endpoint.run(logger: logger)
            } catch where !Task.isCancelled {
                logger.critical("the HTTP endpoint on \(endpoint.host):\(endpoint.port) cannot serve: \(error); stopping")
                failure.withLock { $0 = error }
                stop()
            }
        }
        defer { server.cancel() }
        try await service()
        if let error = failure.withLock({ $0 }) {
            throw ValidationError("the HTTP endpoint on \(endpoint.host):\(endpoint.port) could not serve: \(error)")
        }
    }
}

/// `--http-host`/`--http-port` for the coordinator (default host 127.0.0.1; no port: no endpoint).
struct HTTPOptions: ParsableArguments {
    @Option(name: .customLong("http-host"), help: "Address of the HTTP endpoint (default: $KEEL_HTTP_HOST or 127.0.0.1).")
    var host: String?
    @Option(name: .customLong("http-port"), help: "Serve the console, /api/ and /metrics on this port (default: $KEEL_HTTP_PORT; none: no endpoint).")
    var port: Int?

    func endpoint() throws -> HTTPEndpoint? {
        let environment = ProcessInfo.processInfo.environment
        guard let port = port ?? environment["KEEL_HTTP_PORT"].flatMap(Int.init) else { return nil }
        guard (0...65535).contains(port) else { throw ValidationError("--http-port must be a port number, not \(port)") }
        return HTTPEndpoint(host: host ?? environment["KEEL_HTTP_HOST"] ?? "127.0.0.1", port: port)
    }
}
