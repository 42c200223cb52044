import ArgumentParser
import Foundation
import Keel

struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Durable schedules held by the coordinator: runs started on a cron expression or an interval.",
        subcommands: [Create.self, List.self, Describe.self, Pause.self, Unpause.self, Trigger.self, Delete.self])

    /// Seconds from `15m`, `1h30m`, `45s`, `7d`.
    static func seconds(_ text: String, _ option: String) throws -> Double {
        guard let seconds = DurationText.seconds(text) else {
            throw ValidationError("\(option) '\(text)' is not a duration such as 45s, 15m, 1h30m or 7d")
        }
        return seconds
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a schedule; an invalid one is refused with the reason and nothing is stored.")
        @OptionGroup var broker: BrokerOptions
        @Argument(help: "Schedule name (letters, digits, '.', '_', '-').") var name: String
        @Option(help: "Five-field cron expression (minute hour day-of-month month day-of-week), or @hourly, @daily, …")
        var cron: String?
        @Option(help: "Interval instead of cron, counted from 1970-01-01 UTC: 15m fires at :00, :15, :30, :45.")
        var every: String?
        @Option(help: "Workflow type each firing starts.") var workflow: String
        @Option(help: "Input JSON, or @file.") var input: String?
        @Option(help: "Workflow id of each firing; {schedule} is the name, {time} the firing time (default {schedule}-{time}).")
        var idTemplate: String?
        @Option(help: "When the previous firing's run is still open: skip (default), buffer-one or allow-all.")
        var overlap: String?
        @Option(help: "After downtime, missed firings younger than this still run, once each (default 1h).")
        var catchupWindow: String?
        @Option(help: "IANA time zone of the cron expression (default UTC).") var timezone: String?
        @OptionGroup var budget: BudgetOptions
        @Option(help: "Admission priority of the runs: 1 (highest) to 5.") var priority: Int?
        @Option(help: "Fairness key (tenant) of the runs.") var fairnessKey: String?
        @Flag(help: "Print JSON.") var json = false

        func spec() throws -> ScheduleSpec {
            var overlapPolicy: ScheduleOverlap?
            if let overlap {
                guard let parsed = ScheduleOverlap(rawValue: overlap) else {
                    throw ValidationError(
                        "--overlap must be one of \(ScheduleOverlap.allCases.map(\.rawValue).joined(separator: ", ")), not '\(overlap)'"
                    )
                }
                overlapPolicy = parsed
            }
            var options = WorkflowOptions(budget: try budget.limit())
            options.priority = priority
            options.fairnessKey = fairnessKey
            let spec = ScheduleSpec(
                name: name, cron: cron, every: try every.map { try ScheduleCommand.seconds($0, "--every") },
                workflowType: workflow,
                input: try readInput(input), options: options, idTemplate: idTemplate, overlap: overlapPolicy,
                catchupWindow: try catchupWindow.map { try ScheduleCommand.seconds($0, "--catchup-window") },
                timeZone: timezone)
            do { try spec.validate() } catch { throw ValidationError(error.message) }
            return spec
        }

        func run() async throws {
            let spec = try spec()
            try await broker.withClient { client in
                let record = try await client.createSchedule(spec)
                if json { return try printJSON(record) }
                print(
                    "schedule \(record.spec.name) created; next firing "
                        + (record.nextFireAt.map { $0.formatted(.iso8601) } ?? "none"))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the schedules.")
        @OptionGroup var broker: BrokerOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await broker.withClient { client in
                let schedules = try await client.schedules()
                if json { return try printJSON(schedules) }
                if schedules.isEmpty { return print("no schedules") }
                print(
                    "NAME".padding(24) + "WHEN".padding(20) + "WORKFLOW".padding(22) + "STATE".padding(8) + "NEXT".padding(22)
                        + "STARTED  SKIPPED  MISSED")
                for record in schedules {
                    print(
                        record.spec.name.padding(24) + record.spec.when.padding(20) + record.spec.workflowType.padding(22)
                            + (record.paused ? "paused" : "active").padding(8)
                            + (record.nextFireAt?.formatted(.iso8601) ?? "-").padding(22) + "\(record.started)".padding(9)
                            + "\(record.skippedOverlap)".padding(9) + "\(record.missed)")
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a schedule, its next firings and its last ones.")
        @OptionGroup var broker: BrokerOptions
        @Argument var name: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await broker.withClient { client in
                let description = try await client.describeSchedule(name)
                if json { return try printJSON(description) }
                let record = description.schedule
                let spec = record.spec
                print(
                    "schedule \(spec.name): \(spec.when)" + (spec.timeZone.map { " (\($0))" } ?? "")
                        + ", starts \(spec.workflowType)"
                )
                print(
                    "state \(record.paused ? "paused" + (record.note.map { ": \($0)" } ?? "") : "active"), overlap \(spec.overlapPolicy.rawValue), catch-up window \(Int(spec.catchup)) s, ids \(spec.idTemplate ?? ScheduleSpec.defaultIdTemplate)"
                )
                print("started \(record.started), skipped for overlap \(record.skippedOverlap), missed \(record.missed)")
                if let buffered = record.buffered { print("buffered: the firing of \(buffered.formatted(.iso8601))") }
                print(
                    "next: "
                        + (description.upcoming.isEmpty
                            ? "-" : description.upcoming.map { $0.formatted(.iso8601) }.joined(separator: ", ")))
                for firing in record.recent {
                    print(
                        "  \(firing.time.formatted(.iso8601))  \(firing.outcome.rawValue)"
                            + (firing.triggered == true ? " (trigger)" : "")
                            + (firing.workflowId.map { "  \($0)" } ?? "") + (firing.error.map { "  \($0)" } ?? ""))
                }
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a schedule's firings; missed ones are not caught up.")
        @OptionGroup var broker: BrokerOptions
        @Argument var name: String
        @Option(help: "Why, shown by describe.") var note: String?

        func run() async throws {
            try await broker.withClient { client in
                _ = try await client.pauseSchedule(name, note: note)
                print("schedule \(name) paused")
            }
        }
    }

    struct Unpause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a paused schedule fire again, from now on.")
        @OptionGroup var broker: BrokerOptions
        @Argument var name: String

        func run() async throws {
            try await broker.withClient { client in
                let record = try await client.unpauseSchedule(name)
                print("schedule \(name) active; next firing " + (record.nextFireAt.map { $0.formatted(.iso8601) } ?? "none"))
            }
        }
    }

    struct Trigger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fire a schedule once now, under its overlap policy.")
        @OptionGroup var broker: BrokerOptions
        @Argument var name: String

        func run() async throws {
            try await broker.withClient { client in
                let firing = try await client.triggerSchedule(name)
                print(
                    "schedule \(name) fired: \(firing.outcome.rawValue)" + (firing.workflowId.map { " \($0)" } ?? "")
                        + (firing.error.map { " (\($0))" } ?? ""))
                if firing.outcome == .failed { throw ExitCode(1) }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a schedule; the runs it started go on.")
        @OptionGroup var broker: BrokerOptions
        @Argument var name: String

        func run() async throws {
            try await broker.withClient { client in
                try await client.deleteSchedule(name)
                print("schedule \(name) deleted")
            }
        }
    }
}

extension ScheduleSpec {
    /// `cron 0 * * * *` or `every 900 s`.
    var when: String { cron.map { "cron \($0)" } ?? "every \(Int(every ?? 0)) s" }
}
