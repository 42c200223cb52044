import Foundation
import Logging
import OTel
import ServiceLifecycle

/// OTLP export of Keel's spans through swift-otel, when the standard OpenTelemetry variables ask
/// for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; HTTP/protobuf;
/// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`… are honoured). Without them nothing is
/// bootstrapped: the no-op tracer stays in place and no span is built or sent.
enum TraceExport {
    static func isConfigured(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].contains { !(environment[$0] ?? "").isEmpty }
    }

    /// Runs `body` with the exporter beside it (if configured); flushes the spans when it returns.
    static func around(serviceName: String, logger: Logger, _ body: @escaping @Sendable () async throws -> Void) async throws {
        guard isConfigured() else { return try await body() }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        // Metrics go to Prometheus (/metrics) and logs to standard error, as without OTLP.
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let exporter = try OTel.bootstrap(configuration: configuration)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [exporter], gracefulShutdownSignals: [], logger: logger))
        let running = Task { try await group.run() }
        logger.info("exporting traces over OTLP as \(serviceName)")
        var failure: (any Error)?
        do { try await body() } catch { failure = error }
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        if let failure { throw failure }
    }
}
