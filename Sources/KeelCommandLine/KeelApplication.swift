import ArgumentParser
import Foundation
import Keel
import Synchronization

/// An executable that is the whole `keel` command line for the workflows and activities it
/// registers: `coordinator`, `worker`, `start`, `replay` and every other subcommand, with the
/// same flags, environment variables and behaviour.
///
/// ```swift
/// @main struct Triage: KeelApplication {
///     static let workflows = WorkflowRegistry([TriageTickets.self])
///     static func activities(configuration: KeelConfiguration) -> ActivityRegistry { … }
/// }
/// ```
public protocol KeelApplication: SendableMetatype {
    /// The name in usage lines and help (default: the executable's file name).
    static var commandName: String { get }
    /// The line under the name in `--help`.
    static var abstract: String { get }
    /// What `keel coordinator` runs and `keel replay` checks.
    static var workflows: WorkflowRegistry { get }
    /// What `keel worker` serves. `llm.complete` (for `context.llm`) is added when it is missing,
    /// built from `configuration.llm`.
    static func activities(configuration: KeelConfiguration) -> ActivityRegistry
    /// Subcommands of the application's own, after the standard ones.
    static var extraCommands: [any ParsableCommand.Type] { get }
}

extension KeelApplication {
    public static var commandName: String {
        URL(fileURLWithPath: CommandLine.arguments.first ?? "keel").lastPathComponent
    }
    public static var abstract: String { "Durable execution for LLM pipelines." }
    public static var extraCommands: [any ParsableCommand.Type] { [] }

    /// Parses the command line and runs the subcommand it names.
    public static func main() async {
        ApplicationContext.install(
            ApplicationContext.Contents(
                commandName: commandName, abstract: abstract, workflows: workflows,
                activities: { activities(configuration: $0) }, extraCommands: extraCommands))
        await RootCommand.main()
    }
}

/// The running application's registries, for the subcommands ArgumentParser builds.
enum ApplicationContext {
    struct Contents: @unchecked Sendable {
        // `@unchecked`: command metatypes only, which are immutable.
        var commandName: String
        var abstract: String
        var workflows: WorkflowRegistry
        var activities: @Sendable (KeelConfiguration) -> ActivityRegistry
        var extraCommands: [any ParsableCommand.Type]
    }

    private static let current = Mutex<Contents?>(nil)

    static func install(_ contents: Contents) { current.withLock { $0 = contents } }

    static var contents: Contents {
        guard let contents = current.withLock({ $0 }) else {
            fatalError("KeelApplication.main() installs the application before any command runs")
        }
        return contents
    }

    static var workflows: WorkflowRegistry { contents.workflows }

    /// The application's activities, with `llm.complete` added when it has none.
    static func activities(configuration: KeelConfiguration) -> ActivityRegistry {
        var registry = contents.activities(configuration)
        if !registry.names.contains(LLMCompleteActivity.name) {
            // Registered even without providers: a call then fails with LLMNotConfigured, which
            // says what to set.
            registry.register(LLMCompleteActivity(client: LLMClient(configuration: configuration.llm)))
        }
        return registry
    }
}

struct RootCommand: AsyncParsableCommand {
    static var configuration: CommandConfiguration {
        let application = ApplicationContext.contents
        return CommandConfiguration(
            commandName: application.commandName,
            abstract: application.abstract,
            subcommands: [
                CoordinatorCommand.self, WorkerCommand.self, StartCommand.self, SignalCommand.self, CancelCommand.self,
                TerminateCommand.self, UnblockCommand.self, QueryCommand.self, ListCommand.self, ShowCommand.self,
                HistoryCommand.self, ReplayCommand.self, BackupCommand.self, DeadLetterCommand.self, BreakersCommand.self,
                ScheduleCommand.self,
                MockLLMCommand.self
            ] + application.extraCommands)
    }
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

/// Prints `value` as pretty JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
