import Foundation

/// Where a run stands.
public enum RunStatus: String, Codable, Sendable, CaseIterable {
    case running
    case completed
    case failed
    case cancelled
    case terminated
    case timedOut
    case continuedAsNew
    /// Its code diverged from its history; it waits for matching code (see NonDeterminismError).
    case blocked

    public var isOpen: Bool { self == .running || self == .blocked }
}

/// A workflow run as the store keeps it.
public struct RunRecord: Codable, Sendable, Hashable {
    public var workflowId: String
    public var runId: String
    public var workflowType: String
    public var status: RunStatus
    public var input: Payload
    public var result: Payload?
    public var failure: Failure?
    /// De-duplicates start requests: a start with a known request id returns its run.
    public var requestId: String?
    public var parentRunId: String?
    public var parentSeq: Int64?
    public var continuedFromRunId: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var closedAt: Date?
    public var historyLength: Int64
    public var randomSeed: UInt64
    public var options: WorkflowOptions
    /// When the execution timeout ends the run.
    public var executionDeadline: Date?
    // Spend, filled by the LLM layer.
    public var inputTokens: Int64
    public var outputTokens: Int64
    public var costUSD: Double

    // `result` and `failure` are always written, as null when absent: readers in other
    // languages (docs/protocol.md, `describe`) find them without checking for the key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(workflowId, forKey: .workflowId)
        try container.encode(runId, forKey: .runId)
        try container.encode(workflowType, forKey: .workflowType)
        try container.encode(status, forKey: .status)
        try container.encode(input, forKey: .input)
        try container.encode(result, forKey: .result)
        try container.encode(failure, forKey: .failure)
        try container.encodeIfPresent(requestId, forKey: .requestId)
        try container.encodeIfPresent(parentRunId, forKey: .parentRunId)
        try container.encodeIfPresent(parentSeq, forKey: .parentSeq)
        try container.encodeIfPresent(continuedFromRunId, forKey: .continuedFromRunId)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encodeIfPresent(closedAt, forKey: .closedAt)
        try container.encode(historyLength, forKey: .historyLength)
        try container.encode(randomSeed, forKey: .randomSeed)
        try container.encode(options, forKey: .options)
        try container.encodeIfPresent(executionDeadline, forKey: .executionDeadline)
        try container.encode(inputTokens, forKey: .inputTokens)
        try container.encode(outputTokens, forKey: .outputTokens)
        try container.encode(costUSD, forKey: .costUSD)
    }

    /// Tokens and cost of every attempt of every activity of the run.
    public var spend: Spend {
        get { Spend(inputTokens: inputTokens, outputTokens: outputTokens, costUSD: costUSD) }
        set {
            inputTokens = newValue.inputTokens
            outputTokens = newValue.outputTokens
            costUSD = newValue.costUSD
        }
    }

    public init(
        workflowId: String, runId: String, workflowType: String, status: RunStatus, input: Payload,
        requestId: String?, parentRunId: String? = nil, parentSeq: Int64? = nil,
        continuedFromRunId: String? = nil, createdAt: Date, randomSeed: UInt64,
        options: WorkflowOptions, executionDeadline: Date?
    ) {
        self.workflowId = workflowId
        self.runId = runId
        self.workflowType = workflowType
        self.status = status
        self.input = input
        self.requestId = requestId
        self.parentRunId = parentRunId
        self.parentSeq = parentSeq
        self.continuedFromRunId = continuedFromRunId
        self.createdAt = createdAt
        self.updatedAt = createdAt
        self.historyLength = 0
        self.randomSeed = randomSeed
        self.options = options
        self.executionDeadline = executionDeadline
        self.inputTokens = 0
        self.outputTokens = 0
        self.costUSD = 0
    }
}
