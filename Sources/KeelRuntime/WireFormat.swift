import Foundation
import KeelCore

/// Message types on the wire (the AMQP `type` property and the `keel-type` header).
/// docs/protocol.md describes every body.
public enum WireType: String, Sendable, CaseIterable {
    // keel.jobs
    case start, signal, cancel, terminate, query, describe, redrive, discard, unblock
    // keel.q.<queue>
    case task
    // keel.results
    case started, redelivered, claim, heartbeat, result, reports
    // keel.dead
    case deadLetter = "dead-letter"
}

extension WireType {
    /// The types the coordinator takes on `keel.jobs`.
    public static let jobs: [WireType] = [.start, .signal, .cancel, .terminate, .query, .describe, .redrive, .discard, .unblock]
}

/// The protocol version in the `keel-version` header.
public let wireVersion = "1"

/// JSON coding for wire bodies: times are seconds since 1970 (exact, and easy for any language).
public enum Wire {
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .secondsSince1970
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        do {
            return try decoder.decode(T.self, from: data)
        } catch let error as DecodingError {
            throw WireError(message: "\(what) body is not valid: \(describe(error))")
        } catch {
            throw WireError(message: "\(what) body is not valid JSON: \(error)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map(\.stringValue).joined(separator: ".")
            return keys.isEmpty ? "" : " at '\(keys)'"
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing field '\(key.stringValue)'\(path(context))"
        case .typeMismatch(let type, let context): return "expected \(type)\(path(context))"
        case .valueNotFound(let type, let context): return "null where \(type) is required\(path(context))"
        case .dataCorrupted(let context): return "\(context.debugDescription)\(path(context))"
        @unknown default: return "\(error)"
        }
    }
}

/// A message could not be understood.
public struct WireError: KeelError {
    public var message: String
    public var errorType: String { "BadMessage" }
    public var isNonRetryable: Bool { true }
    public init(message: String) { self.message = message }
}

/// Body of a `start` job. Only `workflowType`, `workflowId` and `input` are required.
public struct StartJob: Codable, Sendable {
    public var workflowType: String
    public var workflowId: String
    public var input: Payload
    public var options: WorkflowOptions?
    public var requestId: String?

    public init(_ request: StartRequest) {
        workflowType = request.workflowType
        workflowId = request.workflowId
        input = request.input
        options = request.options
        requestId = request.requestId
    }

    /// The AMQP message id stands in for a missing request id, so a job published twice
    /// makes one run.
    public func request(messageId: String?) -> StartRequest {
        StartRequest(
            workflowType: workflowType, workflowId: workflowId, input: input, options: options ?? .init(),
            requestId: requestId ?? messageId)
    }
}

/// Body of `signal`, `cancel`, `terminate`, `query`, `describe`, `redrive`, `discard` and
/// `unblock` jobs.
public struct WorkflowJob: Codable, Sendable {
    public var workflowId: String
    /// Signal or query name.
    public var name: String?
    /// Signal input or query argument.
    public var input: Payload?
    /// Why a run is terminated.
    public var reason: String?
    /// The run and activity a `redrive` or `discard` job is about.
    public var runId: String?
    public var activityId: Int64?

    public init(
        workflowId: String, name: String? = nil, input: Payload? = nil, reason: String? = nil, runId: String? = nil,
        activityId: Int64? = nil
    ) {
        self.workflowId = workflowId
        self.name = name
        self.input = input
        self.reason = reason
        self.runId = runId
        self.activityId = activityId
    }
}

/// The reply to a `query` or `describe` job.
public struct JobReply: Codable, Sendable {
    public var ok: Bool
    public var result: Payload?
    public var run: RunRecord?
    public var error: Failure?

    public init(ok: Bool, result: Payload? = nil, run: RunRecord? = nil, error: Failure? = nil) {
        self.ok = ok
        self.result = result
        self.run = run
        self.error = error
    }
}

/// Body of a `reports` message: several worker reports in one message. Applied in this order:
/// starts, then redeliveries, then heartbeats, then results.
public struct ReportBatch: Codable, Sendable {
    public var started: [ActivityStarted]?
    public var redelivered: [ActivityRedelivered]?
    public var heartbeats: [ActivityHeartbeat]?
    public var results: [ActivityResult]?

    public init(
        started: [ActivityStarted] = [], redelivered: [ActivityRedelivered] = [], heartbeats: [ActivityHeartbeat] = [],
        results: [ActivityResult] = []
    ) {
        self.started = started.isEmpty ? nil : started
        self.redelivered = redelivered.isEmpty ? nil : redelivered
        self.heartbeats = heartbeats.isEmpty ? nil : heartbeats
        self.results = results.isEmpty ? nil : results
    }
}
