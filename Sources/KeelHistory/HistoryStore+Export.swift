import KeelCore

extension HistoryStore {
    /// The latest run of `workflowId` (or the run `runId`) as a portable history document.
    public func export(workflowId: String, runId: String? = nil) throws -> HistoryExport {
        let record: RunRecord?
        if let runId { record = try run(runId: runId) } else { record = try latestRun(workflowId: workflowId) }
        guard let record else {
            throw StoreError(
                message: "no run of workflow \(workflowId)\(runId.map { " with run id \($0)" } ?? "") in this database")
        }
        return HistoryExport(
            workflowId: record.workflowId, runId: record.runId, workflowType: record.workflowType,
            randomSeed: record.randomSeed, startTime: record.createdAt, events: try events(runId: record.runId))
    }
}
