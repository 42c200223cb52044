import ArgumentParser
import Foundation
import Keel
import KeelAMQP

/// `keel dlq …`: the dead-letter queue, for operators.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "List, drain, redrive and discard dead-lettered activities and messages.",
        subcommands: [List.self, Drain.self, Redrive.self, Discard.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what the dead-letter queue holds, without removing anything.")
        @OptionGroup var broker: BrokerOptions
        @Option(help: "Show at most this many.") var limit = 1000
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let items = try DeadLetterQueue(url: try broker.url()).list(limit: limit)
            if json { return try printJSON(items) }
            if items.isEmpty { return print("the dead-letter queue is empty") }
            for item in items {
                if let entry = item.entry {
                    print(
                        "\(item.id)  \(entry.parked ? "PARKED" : "dead")  \(entry.workflowType)/\(entry.workflowId)  \(entry.activityType) on \(entry.taskQueue)  \(entry.attempts.count) attempt(s)  \(item.reason)"
                    )
                } else {
                    print("\(item.id)  message  \(item.messageType ?? "?") from \(item.origin ?? "?")  \(item.reason)")
                }
            }
            print("\(items.count) item(s); `keel dlq list --json` shows inputs and every attempt's error")
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Move every item out of the queue into a JSON Lines file (appended; each line is on disk before its message is removed)."
        )
        @OptionGroup var broker: BrokerOptions
        @Option(help: "The file to append to.") var out: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let count = try DeadLetterQueue(url: try broker.url()).drain(to: out)
            if json { try printJSON(["drained": count]) } else { print("drained \(count) item(s) into \(out)") }
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Retry items: a parked activity gets fresh attempts and its workflow resumes; a message goes back to its queue.")
        @OptionGroup var selection: Selection

        func run() async throws {
            try await selection.apply { queue, ids, all, client in try await queue.redrive(ids: ids, all: all, client: client) }
        }
    }

    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove items: a parked activity's workflow receives its failure; anything else is deleted.")
        @OptionGroup var selection: Selection

        func run() async throws {
            try await selection.apply { queue, ids, all, client in try await queue.discard(ids: ids, all: all, client: client) }
        }
    }

    /// The items a redrive or discard acts on, and how to report it.
    struct Selection: ParsableArguments {
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "Item ids (from `keel dlq list`).") var ids: [String] = []
        @Flag(help: "Every item.") var all = false
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if ids.isEmpty && !all { throw ValidationError("name the items (ids from `keel dlq list`), or pass --all") }
        }

        /// Runs `action`, prints what happened to each item; exits 1 if any could not be handled.
        func apply(
            _ action: (DeadLetterQueue, Set<String>, Bool, KeelClient) async throws -> [DeadLetterQueue.Outcome]
        ) async throws {
            let url = try broker.url()
            let client = KeelClient(url: url)
            defer { client.close() }
            let outcomes = try await action(DeadLetterQueue(url: url), Set(ids), all, client)
            if json {
                try printJSON(outcomes)
            } else {
                for outcome in outcomes { print("\(outcome.id): \(outcome.done ? "" : "NOT DONE: ")\(outcome.detail)") }
                if outcomes.isEmpty { print("nothing matched") }
            }
            if outcomes.contains(where: { !$0.done }) { throw ExitCode(1) }
        }
    }
}
