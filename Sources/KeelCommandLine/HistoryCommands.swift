import ArgumentParser
import Foundation
import Keel

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List workflow runs, newest first.")

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Only runs with this status (\(RunQuery.StatusFilter.names.joined(separator: ", "))); stalled shows why.")
    var status: String?
    @Option(help: "Only runs of this workflow type.") var type: String?
    @Option(help: "Only runs whose workflow id contains this.") var search: String?
    @Option(help: "At most this many runs.") var limit = 100
    @Option(help: "Order: started (newest first) or cost (most expensive first).") var sort = "started"
    @Flag(help: "Only runs costing more than 3x the median of their workflow type.") var costOutliers = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        if status == "stalled" && type == nil && search == nil && !costOutliers { return try listStalled() }
        guard let order = RunQuery.Order(rawValue: sort) else {
            throw ValidationError("--sort is started or cost, not '\(sort)'")
        }
        var filter: RunQuery.StatusFilter?
        if let status {
            guard let parsed = RunQuery.StatusFilter(status) else {
                throw ValidationError(
                    "unknown status '\(status)'; use one of \(RunQuery.StatusFilter.names.joined(separator: ", "))")
            }
            filter = parsed
        }
        let listed = try database.openStore().runs(
            RunQuery(
                status: filter, workflowType: type, search: search, costOutliersOnly: costOutliers, order: order, limit: limit))
        if json { return try printJSON(listed.map(\.run)) }
        print(
            "WORKFLOW ID".padding(28) + "TYPE".padding(24) + "STATUS".padding(16) + "EVENTS".padding(8) + "SPEND".padding(22)
                + "STARTED")
        for item in listed {
            let run = item.run
            let flag = item.costRatio.map { String(format: "  %.1fx the median cost", $0) } ?? ""
            print(
                run.workflowId.padding(28) + run.workflowType.padding(24) + run.status.rawValue.padding(16)
                    + "\(run.historyLength)".padding(8) + run.spend.summary.padding(22) + run.createdAt.formatted(.iso8601) + flag
            )
        }
    }

    /// Open runs the coordinator's last check found stalled (`KEEL_STALL_SECONDS`, 300), with why.
    func listStalled() throws {
        let stalled = try database.openStore().stalledRuns()
        if json { return try printJSON(stalled) }
        if stalled.isEmpty { return print("no stalled runs") }
        print("WORKFLOW ID".padding(28) + "TYPE".padding(24) + "SINCE".padding(22) + "WHY")
        for run in stalled.prefix(limit) {
            print(
                run.workflowId.padding(28) + run.workflowType.padding(24) + run.since.formatted(.iso8601).padding(22) + run.reason
            )
        }
    }
}

struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a run's history as a timeline: every attempt, its worker, duration and error.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Workflow id.") var workflowId: String
    @Option(help: "A specific run (default: the latest).") var runId: String?
    @Flag(help: "Print the history export JSON instead (what `keel history export` writes and `keel replay --file` reads).")
    var json = false

    func run() async throws {
        let store = try database.openStore()
        let history = try store.export(workflowId: workflowId, runId: runId)
        if json { return print(String(decoding: try history.encoded(), as: UTF8.self)) }
        let record = try store.run(runId: history.runId)
        print(
            "workflow \(history.workflowId)  type \(history.workflowType)  run \(history.runId)  trace \(TraceIdentity.traceId(runId: history.runId))"
        )
        if let record {
            print("status \(record.status.rawValue)" + (record.failure.map { "  error \($0)" } ?? ""))
            if !record.spend.isZero {
                let limit = record.options.budget
                // Closed children's spend is charged to this run when they close.
                let children = history.events.filter { $0.kind == .childWorkflowCompleted || $0.kind == .childWorkflowFailed }
                    .compactMap(Spend.charged(by:)).reduce(Spend.zero, +)
                let tree =
                    children.isZero
                    ? "" : " (children \(children.totalTokens) tokens, " + String(format: "$%.4f", children.costUSD) + ")"
                print(
                    "spend \(record.spend.inputTokens) input + \(record.spend.outputTokens) output tokens, "
                        + String(format: "$%.4f", record.spend.costUSD) + tree
                        + (limit.map {
                            " of budget "
                                + [$0.maxTokens.map { "\($0) tokens" }, $0.maxCostUSD.map { String(format: "$%.4f", $0) }]
                                .compactMap { $0 }.joined(separator: ", ")
                        } ?? ""))
            }
            if let result = record.result { print("result \(result.preview)") }
        }
        print("")
        for line in Timeline(history.events).lines { print(line) }
    }
}

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Export run histories; delete old closed runs.", subcommands: [Export.self, Prune.self])

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Delete runs closed longer ago than --older-than, with their events, in batches of 500 (safe beside a running coordinator)."
        )
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Age of the closed runs to delete: 7d, 12h, 30m, …") var olderThan: String
        @Flag(help: "Only count what would be deleted.") var dryRun = false

        func run() async throws {
            let seconds = try durationOption(olderThan, "--older-than", examples: "7d, 12h or 30m")
            let store = try database.openStore()
            let cutoff = Date().addingTimeInterval(-seconds)
            if dryRun {
                return print(
                    "\(try store.closedRunCount(closedBefore: cutoff)) runs closed before \(cutoff.formatted(.iso8601)) would be deleted"
                )
            }
            var total = 0
            while case let deleted = try store.pruneClosedRuns(closedBefore: cutoff), deleted > 0 { total += deleted }
            print("deleted \(total) runs closed before \(cutoff.formatted(.iso8601))")
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a run's history as JSON, for `keel replay --file` and replay tests.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Workflow id.") var workflowId: String
        @Option(help: "A specific run (default: the latest).") var runId: String?
        @Option(help: "Output file (default: standard output).") var out: String?

        func run() async throws {
            let data = try database.openStore().export(workflowId: workflowId, runId: runId).encoded()
            if let out {
                try data.write(to: URL(fileURLWithPath: out))
            } else {
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }
}

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a recorded history against this binary's workflow code; exit 1 if the code diverges.")

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Workflow id to replay from the database.") var workflowId: String?
    @Option(help: "A history export JSON file instead of the database.") var file: String?

    func run() async throws {
        let history: HistoryExport
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            history = try HistoryExport.decode(data, source: file)
        } else if let workflowId {
            history = try database.openStore().export(workflowId: workflowId)
        } else {
            throw ValidationError("give a workflow id or --file FILE")
        }
        let report = try HistoryReplayer(workflows: ApplicationContext.workflows).replay(history)
        if let divergence = report.nondeterminism {
            print("NON-DETERMINISTIC: \(divergence.message)")
            throw ExitCode(1)
        }
        let outcome =
            report.outcome.map(\.summary) ?? "still open (\(report.pendingCommands.count) command(s) would be issued next)"
        print(
            "replayed \(report.events) events of \(history.workflowType) \(history.workflowId): deterministic; outcome \(outcome)"
        )
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
