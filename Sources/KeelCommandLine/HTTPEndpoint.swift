import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

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

    /// The endpoint as a service for the process's `ServiceGroup`: `GET /metrics`, and `routes`.
    func service(logger: Logger) -> some Service {
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
        let (host, port) = (self.host, self.port)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "keel"),
            onServerRunning: { channel in
                logger.info("HTTP on http://\(host):\(channel.localAddress?.port ?? port)/ (metrics at /metrics)")
            }, logger: quiet)
        return Served(app: app, host: host, port: port, logger: logger)
    }

    /// Says which endpoint could not serve, and why, before the group shuts down.
    private struct Served<App: ApplicationProtocol>: Service {
        let app: App
        let host: String
        let port: Int
        let logger: Logger

        func run() async throws {
            do {
                try await app.run()
            } catch {
                logger.critical("the HTTP endpoint on \(host):\(port) cannot serve: \(error); stopping")
                throw error
            }
        }
    }
}

/// The services of one Keel process in one `ServiceGroup`: SIGTERM or SIGINT starts a graceful
/// shutdown; when the main service (coordinator, worker) returns, or any service fails, the others
/// shut down gracefully too, in reverse order (the trace exporter last, so it flushes every span);
/// an error of any one ends the process non-zero.
enum ProcessServices {
    static func run(_ main: some Service, endpoint: HTTPEndpoint?, serviceName: String, logger: Logger) async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        func add(_ service: any Service) {
            services.append(
                .init(
                    service: service, successTerminationBehavior: .gracefullyShutdownGroup,
                    failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        if let exporter = try TraceExport.exporter(serviceName: serviceName, logger: logger) { add(exporter) }
        if let endpoint {
            endpoint.bootstrap()
            add(endpoint.service(logger: logger))
        }
        add(main)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// `--http-host`/`--http-port` for the coordinator (default host 127.0.0.1; no port: no endpoint).
struct HTTPOptions: ParsableArguments {
    @Option(name: .customLong("http-host"), help: "Address of the HTTP endpoint (default: $KEEL_HTTP_HOST or 127.0.0.1).")
    var host: String?
    @Option(
        name: .customLong("http-port"),
        help: "Serve the console, /api/ and /metrics on this port (default: $KEEL_HTTP_PORT; none: no endpoint).")
    var port: Int?

    func endpoint() throws -> HTTPEndpoint? {
        let environment = ProcessInfo.processInfo.environment
        guard let port = port ?? environment["KEEL_HTTP_PORT"].flatMap(Int.init) else { return nil }
        guard (0...65535).contains(port) else { throw ValidationError("--http-port must be a port number, not \(port)") }
        return HTTPEndpoint(host: host ?? environment["KEEL_HTTP_HOST"] ?? "127.0.0.1", port: port)
    }
}
