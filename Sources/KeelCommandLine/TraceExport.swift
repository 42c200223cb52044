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

    /// The exporter, as a service for the process's `ServiceGroup` (it flushes the spans when it
    /// shuts down), or nil when no OTLP endpoint is configured.
    static func exporter(serviceName: String, logger: Logger) throws -> (any Service)? {
        guard isConfigured() else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        // Metrics go to Prometheus (/metrics) and logs to standard error, as without OTLP.
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        let exporter = try OTel.bootstrap(configuration: configuration)
        logger.info("exporting traces over OTLP as \(serviceName)")
        return exporter
    }
}
