import ArgumentParser
import Foundation
import Keel
import KeelExamples

@main
struct KeelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "Durable execution for LLM pipelines.",
        subcommands: [
            CoordinatorCommand.self, WorkerCommand.self, StartCommand.self, SignalCommand.self, CancelCommand.self,
            TerminateCommand.self, UnblockCommand.self, QueryCommand.self, ListCommand.self, ShowCommand.self,
            HistoryCommand.self, ReplayCommand.self,
            DeadLetterCommand.self, BreakersCommand.self, MockLLMCommand.self, BenchCommand.self
        ])
}

/// `--db PATH`, falling back to `KEEL_DB`, then `.keel/keel.sqlite`.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "History database (default: $KEEL_DB or .keel/keel.sqlite).")
    var db: String?

    var path: String { db ?? ProcessInfo.processInfo.environment["KEEL_DB"] ?? ".keel/keel.sqlite" }

    func openStore() throws -> SQLiteHistoryStore {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no history database at \(path); pass --db PATH or set KEEL_DB")
        }
        return try SQLiteHistoryStore(path: path)
    }
}

/// The workflows this binary can replay and run.
enum BuiltIn {
    static var workflows: WorkflowRegistry {
        var registry = WorkflowRegistry()
        registry.register(BenchSequential.self)
        registry.register(BenchSteps.self)
        registry.register(BenchLLM.self)
        registry.register(FaultTrap.self)
        registry.register(CallActivity.self)
        registry.register(DocumentProcessing.self)
        registry.register(InvoiceProcessing.self)
        registry.register(TripBooking.self)
        registry.register(SummaryApproval.self)
        registry.register(AgentLoop.self)
        registry.register(GPUInference.self)
        return registry
    }

    static var activities: ActivityRegistry {
        var registry = ActivityRegistry()
        registry.register(NoOp())
        registry.register(Sleep())
        registry.register(FetchDocument())
        registry.register(PostBill())
        registry.register(TripBooking.Book())
        registry.register(TripBooking.CancelBooking())
        return registry
    }
}

/// Prints `value` as pretty JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
