import ArgumentParser
import Dispatch
import Foundation
import Keel
import KeelAMQP
import KeelConsole
import Logging

/// `--queue-type classic|quorum`, falling back to `KEEL_QUEUE_TYPE`, then classic.
struct QueueTypeOption: ParsableArguments {
    @Option(
        help:
            "Type of the durable queues: classic or quorum (replicated over a RabbitMQ cluster); default $KEEL_QUEUE_TYPE or classic. Every process of a namespace needs the same."
    )
    var queueType: String?

    func resolve() throws -> Topology.QueueType {
        guard let queueType else {
            do { return try Topology.queueTypeFromEnvironment() } catch let error as AMQPError {
                throw ValidationError(error.message)
            }
        }
        guard let type = Topology.QueueType(rawValue: queueType) else {
            throw ValidationError("--queue-type must be classic or quorum, not '\(queueType)'")
        }
        return type
    }
}

/// `--amqp-url URL`, falling back to `KEEL_AMQP_URL`, then a local broker on `KEEL_AMQP_PORT`.
public struct BrokerOptions: ParsableArguments {
    @Option(
        name: .customLong("amqp-url"),
        help: "RabbitMQ URL (default: $KEEL_AMQP_URL, else amqp://guest:guest@localhost on port $KEEL_AMQP_PORT or 5672).")
    var amqpURL: String?

    public init() {}

    public func url() throws -> AMQPURL {
        if let amqpURL { return try AMQPURL(amqpURL) }
        return try AMQPURL.fromEnvironment()
    }

    /// Runs `body` with a client of this broker, closed after it.
    func withClient<T>(_ body: (KeelClient) async throws -> T) async throws -> T {
        let client = KeelClient(url: try url())
        defer { client.close() }
        return try await body(client)
    }
}

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator", abstract: "Run the coordinator: history, timers, task dispatch. Stops cleanly on SIGTERM.")
    @OptionGroup var broker: BrokerOptions
    @OptionGroup var database: DatabaseOptions
    @Option(help: "SQLite durability: normal or full (fsync every commit); default $KEEL_DURABILITY or normal.")
    var durability: String?
    @OptionGroup var llm: LLMConfigOptions
    @OptionGroup var http: HTTPOptions
    @Option(
        help:
            "Admission by capacity: on (LLM calls wait in the coordinator for their providers' capacity, tasks for their queue's cap and their run's budget) or off (published at once); default $KEEL_ADMISSION or on."
    )
    var admission: String?
    @Option(
        help:
            "Delete runs closed longer ago than this (7d, 12h, …; off keeps them all), in small batches; default $KEEL_RETENTION or 30d."
    )
    var retention: String?
    @Flag(
        help:
            "When another coordinator is active on the namespace, wait and take over when it goes (its history: the same database, or with --replication stream a file of its own that follows the log), instead of refusing to start."
    )
    var standby = false
    @Option(
        help:
            "Replicated history: stream (every write transaction also goes, confirmed, to the namespace's history stream, which a standby follows into a file of its own) or off; default $KEEL_REPLICATION or off."
    )
    var replication: String?
    @OptionGroup var queueType: QueueTypeOption
    @Option(
        help:
            "Broker users, comma-separated, whose jobs may cancel, terminate, redrive, discard, unblock and manage schedules; others may start, signal and read (default: $KEEL_OPERATORS; none set: anyone who may publish jobs)."
    )
    var operators: String?

    func run() async throws {
        var configuration = CoordinatorService.Configuration(url: try broker.url(), databasePath: database.path)
        configuration.standby = standby
        let replicating = replication ?? ProcessInfo.processInfo.environment["KEEL_REPLICATION"] ?? "off"
        guard let mode = CoordinatorService.Replication(rawValue: replicating.isEmpty ? "off" : replicating) else {
            throw ValidationError("replication must be off or stream, not '\(replicating)'")
        }
        configuration.replication = mode
        if let text = operators ?? ProcessInfo.processInfo.environment["KEEL_OPERATORS"] {
            let users = Set(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
            guard !users.isEmpty else { throw ValidationError("--operators must name at least one broker user, not '\(text)'") }
            configuration.operators = users
        }
        configuration.topology.queueType = try queueType.resolve()
        if let text = retention ?? ProcessInfo.processInfo.environment["KEEL_RETENTION"] {
            configuration.retention =
                text == "off" ? nil : try durationOption(text, "--retention", examples: "30d or 12h, or off")
        }
        let admitting = admission ?? ProcessInfo.processInfo.environment["KEEL_ADMISSION"] ?? "on"
        guard admitting == "on" || admitting == "off" else {
            throw ValidationError("admission must be on or off, not '\(admitting)'")
        }
        let loaded = try llm.load()
        if let loaded {
            configuration.coordinator.providerChain = loaded.chain
            configuration.coordinator.circuitBreaker = loaded.circuitBreakerPolicy
        }
        configuration.coordinator.capacity = (loaded ?? LLMConfiguration(providers: [])).capacity(enabled: admitting == "on")
        let level = durability ?? ProcessInfo.processInfo.environment["KEEL_DURABILITY"] ?? "normal"
        guard let parsed = SQLiteHistoryStore.Durability(rawValue: level) else {
            throw ValidationError("durability must be normal or full, not '\(level)'")
        }
        configuration.durability = parsed
        let environment = ProcessInfo.processInfo.environment
        if let seconds = environment["KEEL_QUEUE_CHECK_SECONDS"].flatMap(Double.init), seconds > 0 {
            configuration.queueCheckInterval = seconds
        }
        if let seconds = environment["KEEL_NO_CONSUMER_SECONDS"].flatMap(Double.init), seconds >= 0 {
            configuration.noConsumerWarning = seconds
        }
        if let seconds = environment["KEEL_STALL_SECONDS"].flatMap(Double.init), seconds > 0 {
            configuration.stallThreshold = seconds
        }
        var endpoint = try http.endpoint()
        let service = CoordinatorService(configuration: configuration, workflows: ApplicationContext.workflows)
        var backend: ConsoleBackend?
        if let host = endpoint?.host {
            let access = try AccessPolicy(host: host, token: environment["KEEL_API_TOKEN"])
            // A reader of its own beside the coordinator's store; opened first, so the schema is there.
            let console = ConsoleBackend(
                store: try SQLiteHistoryStore(path: database.path), url: configuration.url, topology: configuration.topology,
                queueSamples: { service.queues.latest })
            endpoint?.routes = { ConsoleRoutes.add(to: $0, backend: console, access: access) }
            backend = console
        }
        defer { backend?.close() }
        try await ProcessServices.run(
            service, endpoint: endpoint, serviceName: "keel-coordinator", logger: Logger(label: "keel.coordinator"))
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Serve one task queue. Stops taking tasks on SIGTERM and lets running ones finish.")
    @OptionGroup var broker: BrokerOptions
    @Option(help: "Task queue to serve (default: $KEEL_QUEUE or default).") var queue: String?
    @Option(help: "Activities run at once; the prefetch is one more (default: $KEEL_CONCURRENCY or 4).") var concurrency: Int?
    @OptionGroup var llm: LLMConfigOptions
    @Option(
        help:
            "Serve GET /metrics on this port (default: $KEEL_METRICS_PORT; none: no endpoint); host from $KEEL_HTTP_HOST or 127.0.0.1."
    )
    var metricsPort: Int?
    @OptionGroup var queueType: QueueTypeOption
    @Option(
        help: ArgumentHelp(
            "How long an activity runs before its start is reported, such as 250ms (default: $KEEL_START_REPORT_DELAY or 250ms); 0 reports every start before the activity runs.",
            discussion:
                "A shorter activity's result stands for its start: one broker message less per step. See docs/protocol.md."))
    var startReportDelay: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let concurrency = self.concurrency ?? environment["KEEL_CONCURRENCY"].flatMap(Int.init) ?? 4
        guard concurrency > 0 else { throw ValidationError("--concurrency must be at least 1") }
        var configuration = WorkerService.Configuration(
            url: try broker.url(), taskQueue: queue ?? environment["KEEL_QUEUE"] ?? "default", concurrency: concurrency)
        configuration.topology.queueType = try queueType.resolve()
        if let text = startReportDelay ?? environment["KEEL_START_REPORT_DELAY"] {
            configuration.startReportDelay = .seconds(
                double: try durationOption(text, "--start-report-delay", examples: "250ms or 1s, or 0", zero: "0"))
        }
        let activities = ApplicationContext.activities(
            configuration: KeelConfiguration(
                llm: try llm.load() ?? LLMConfiguration(providers: []), taskQueue: configuration.taskQueue,
                environment: environment))
        let endpoint = (metricsPort ?? environment["KEEL_METRICS_PORT"].flatMap(Int.init)).map {
            HTTPEndpoint(host: environment["KEEL_HTTP_HOST"] ?? "127.0.0.1", port: $0)
        }
        let service = WorkerService(configuration: configuration, activities: activities)
        try await ProcessServices.run(
            service, endpoint: endpoint, serviceName: "keel-worker", logger: Logger(label: "keel.worker"))
    }
}

/// JSON from the argument, or from a file with `@path`.
func readInput(_ text: String?) throws -> Payload {
    guard var text else { return .null }
    if text.hasPrefix("@") {
        let path = String(text.dropFirst())
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read input file \(path)")
        }
        text = String(decoding: data, as: UTF8.self)
    }
    let value: JSONValue
    do {
        value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    } catch {
        throw ValidationError("input is not valid JSON: \(text.prefix(200))")
    }
    do {
        return try Payload(encoding: value, field: "input")
    } catch let error as PayloadError {
        throw ValidationError(error.message)
    }
}

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a workflow through the jobs queue.")
    @OptionGroup var broker: BrokerOptions
    @Argument(help: "Workflow type.") var type: String
    @Option(help: "Workflow id.") var id: String
    @Option(help: "Input JSON, or @file.") var input: String?
    @Option(help: "Request id: repeated starts with it make one run (default: a new one).") var requestId: String?
    @OptionGroup var budget: BudgetOptions
    @Option(help: "When the id has an open run: useExisting (default), fail or terminateExisting.")
    var idConflictPolicy: String?
    @Option(help: "When the id's runs are all closed: allowDuplicate (default), allowDuplicateFailedOnly or rejectDuplicate.")
    var idReusePolicy: String?
    @Option(help: "Admission priority of the run's activities when capacity is short: 1 (highest) to 5 (lowest); default 3.")
    var priority: Int?
    @Option(help: "Whose work this is (a tenant): capacity is shared across fairness keys by weighted round robin.")
    var fairnessKey: String?
    @Flag(help: "Wait for the result; exit 0 if it completed, 1 otherwise.") var wait = false

    /// The start options these flags give.
    func options() throws -> WorkflowOptions {
        var options = WorkflowOptions(budget: try budget.limit())
        if let idConflictPolicy {
            guard let policy = WorkflowIdConflictPolicy(rawValue: idConflictPolicy) else {
                throw ValidationError(
                    "--id-conflict-policy must be one of \(WorkflowIdConflictPolicy.allCases.map(\.rawValue).joined(separator: ", ")), not '\(idConflictPolicy)'"
                )
            }
            options.idConflictPolicy = policy
        }
        if let idReusePolicy {
            guard let policy = WorkflowIdReusePolicy(rawValue: idReusePolicy) else {
                throw ValidationError(
                    "--id-reuse-policy must be one of \(WorkflowIdReusePolicy.allCases.map(\.rawValue).joined(separator: ", ")), not '\(idReusePolicy)'"
                )
            }
            options.idReusePolicy = policy
        }
        options.priority = priority
        options.fairnessKey = fairnessKey
        do { try options.validate() } catch let error as InvalidOptionsError { throw ValidationError(error.message) }
        return options
    }
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await broker.withClient { client in
            let request = StartRequest(
                workflowType: type, workflowId: id, input: try readInput(input), options: try options(),
                requestId: requestId ?? UUID().uuidString)
            guard wait else {
                try await client.start(request)
                if json {
                    try printJSON(["workflowId": id, "requestId": request.requestId ?? ""])
                } else {
                    print("start of \(type) \(id) published")
                }
                return
            }
            let started = try await client.startAndConfirm(request)
            if !json { print(started.started ? "started run \(started.runId)" : "joined the existing run \(started.runId)") }
            let run = try await client.waitForResult(workflowId: id)
            if json {
                try printJSON(run)
            } else {
                print("\(run.status.rawValue): " + (run.result?.json ?? run.failure?.description ?? ""))
            }
            if run.status != .completed { throw ExitCode(1) }
        }
    }
}

/// `--no-wait` for the jobs that change a run.
struct NoWaitOption: ParsableArguments {
    @Flag(
        name: .customLong("no-wait"),
        help:
            "Return once RabbitMQ holds the job, without waiting for the coordinator's answer (a refusal then goes to keel.dead only)."
    )
    var noWait = false
}

struct SignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal", abstract: "Send a signal to a workflow; exits 1 with the reason if the coordinator refuses it.")
    @OptionGroup var broker: BrokerOptions
    @Argument var workflowId: String
    @Argument var name: String
    @Option(help: "Signal input JSON, or @file.") var input: String?
    @OptionGroup var wait: NoWaitOption
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await broker.withClient { client in
            try await client.signal(workflowId: workflowId, name: name, input: try readInput(input), confirm: !wait.noWait)
            let outcome = wait.noWait ? "published" : "delivered"
            if json {
                try printJSON(["workflowId": workflowId, "signal": name, "outcome": outcome])
            } else {
                print("signal \(name) to \(workflowId) \(outcome)")
            }
        }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Ask a workflow to cancel; exits 1 with the reason if the coordinator refuses.")
    @OptionGroup var broker: BrokerOptions
    @Argument var workflowId: String
    @OptionGroup var wait: NoWaitOption
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await broker.withClient { client in
            try await client.cancel(workflowId: workflowId, confirm: !wait.noWait)
            let outcome = wait.noWait ? "published" : "requested"
            if json {
                try printJSON(["workflowId": workflowId, "cancel": outcome])
            } else {
                print("cancellation of \(workflowId) \(outcome)")
            }
        }
    }
}

struct TerminateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "terminate",
        abstract:
            "End a workflow's open run at once, running no more of its code; exits 1 with the reason if the coordinator refuses.")
    @OptionGroup var broker: BrokerOptions
    @Argument var workflowId: String
    @Option(help: "Why; recorded as the run's failure.") var reason = "terminated by an operator"
    @OptionGroup var wait: NoWaitOption
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await broker.withClient { client in
            try await client.terminate(workflowId: workflowId, reason: reason, confirm: !wait.noWait)
            let outcome = wait.noWait ? "published" : "done"
            if json {
                try printJSON(["workflowId": workflowId, "terminate": outcome])
            } else {
                print("termination of \(workflowId) \(outcome)")
            }
        }
    }
}

struct UnblockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unblock",
        abstract:
            "Replay a blocked run with the coordinator's current code and let it run again (after a fix); exits 1 with the reason if it stays blocked."
    )
    @OptionGroup var broker: BrokerOptions
    @Argument var workflowId: String
    @Option(help: "Seconds to wait for the coordinator's answer.") var timeout = 60.0
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await broker.withClient { client in
            let run = try await client.unblock(workflowId: workflowId, timeout: timeout)
            if json { try printJSON(run) } else { print("run \(run.runId) of \(workflowId) is \(run.status.rawValue) again") }
        }
    }
}

struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query", abstract: "Ask a workflow a query; prints the JSON answer.")
    @OptionGroup var broker: BrokerOptions
    @Argument var workflowId: String
    @Argument var name: String
    @Option(help: "Query argument JSON.") var input: String?

    func run() async throws {
        try await broker.withClient { client in
            let input = try self.input.map { try readInput($0) }
            print(try await client.query(workflowId: workflowId, name: name, argument: input).json)
        }
    }
}
