import Foundation

/// A run's history as a portable JSON document, for `keel replay --file` and replay tests.
public struct HistoryExport: Codable, Sendable, Equatable {
    public static let currentFormat = "keel.history/1"

    public var format: String
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    public var randomSeed: UInt64
    public var startTime: Date
    public var events: [HistoryEvent]

    public init(
        workflowId: String, runId: String, workflowType: String, randomSeed: UInt64, startTime: Date, events: [HistoryEvent]
    ) {
        self.format = Self.currentFormat
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.randomSeed = randomSeed
        self.startTime = startTime
        self.events = events
    }

    /// Pretty JSON; times are seconds since 1970 so they round-trip exactly.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .secondsSince1970
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data, source: String) throws -> HistoryExport {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        let export: HistoryExport
        do {
            export = try decoder.decode(HistoryExport.self, from: data)
        } catch {
            throw ReplayError(message: "\(source) is not a Keel history export (\(currentFormat)): \(error)")
        }
        guard export.format == currentFormat else {
            throw ReplayError(message: "\(source) has format '\(export.format)'; this version reads \(currentFormat)")
        }
        return export
    }
}

/// Replays recorded histories against the current workflow code.
///
/// Use it in your own tests to prove that a code change keeps running workflows replayable:
/// ```swift
/// let report = try HistoryReplayer(workflows: registry).replay(HistoryExport.decode(data, source: "golden.json"))
/// #expect(report.nondeterminism == nil)
/// ```
public struct HistoryReplayer: Sendable {
    public let workflows: WorkflowRegistry

    public init(workflows: WorkflowRegistry) { self.workflows = workflows }

    public struct Report: Sendable {
        public var events: Int
        /// The closing command the code reached, if the history is of a closed run.
        public var outcome: Command?
        public var nondeterminism: NonDeterminismError?
        /// Commands the code issued beyond the recorded history (an open run would issue them next).
        public var pendingCommands: [Command]
    }

    public func replay(_ history: HistoryExport) throws -> Report {
        let instance = WorkflowInstance(
            definition: try workflows.definition(named: history.workflowType),
            info: WorkflowInfo(workflowId: history.workflowId, runId: history.runId, workflowType: history.workflowType),
            randomSeed: history.randomSeed, startTime: history.startTime)
        defer { instance.evict() }
        let activation = instance.replay(history.events)
        return Report(
            events: history.events.count, outcome: instance.outcome, nondeterminism: activation.nondeterminism,
            pendingCommands: activation.commands)
    }
}

/// A history could not be read for replay.
public struct ReplayError: KeelError {
    public var message: String
    public var errorType: String { "ReplayFailed" }
    public init(message: String) { self.message = message }
}
