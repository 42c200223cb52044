import ArgumentParser
import Foundation
import Keel
import KeelMockLLM

/// `--config PATH`, falling back to `KEEL_CONFIG`: the `keel.yaml` with the `llm:` section.
struct LLMConfigOptions: ParsableArguments {
    @Option(
        name: .customLong("config"),
        help: "keel.yaml with the `llm:` section (default: $KEEL_CONFIG; else KEEL_LLM_BASE_URL/KEEL_LLM_MODEL/KEEL_LLM_API).")
    var path: String?

    func load() throws -> LLMConfiguration? {
        do {
            return try LLMConfiguration.resolve(path: path, environment: ProcessInfo.processInfo.environment)
        } catch let error as LLMConfigurationError {
            throw ValidationError(error.message)
        }
    }
}

struct MockLLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-llm",
        abstract:
            "Run a fault-injecting LLM provider (Anthropic and OpenAI APIs) for tests and demos; docs/llm.md describes scenarios."
    )
    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one; the chosen port is printed).") var port = 8090
    @Option(help: "Scenario JSON file (default: answer 200 to everything).") var scenario: String?
    @Option(help: "Directory whose ID.txt files GET /documents/ID serves (default: generated text).") var documents: String?

    func run() async throws {
        var loaded = MockScenario()
        if let scenario {
            guard let data = FileManager.default.contents(atPath: scenario) else {
                throw ValidationError("cannot read scenario file \(scenario)")
            }
            do { loaded = try MockScenario.decode(data, source: scenario) } catch let error as MockScenarioError {
                throw ValidationError(error.message)
            }
        }
        let host = self.host
        if let documents, !FileManager.default.fileExists(atPath: documents) {
            throw ValidationError("no documents directory at \(documents)")
        }
        try await MockLLMServer(host: host, port: port, scenario: loaded, documentsDirectory: documents).run { port in
            // Written straight to the descriptor: scripts wait for this line and stdout may be a pipe.
            FileHandle.standardOutput.write(Data("keel mock-llm listening on http://\(host):\(port)\n".utf8))
        }
    }
}

struct BreakersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakers", abstract: "Show the coordinator's circuit breakers per LLM provider, as last recorded.")
    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let breakers = try database.openStore().circuitBreakers()
        if json { return try printJSON(breakers) }
        if breakers.isEmpty { return print("no circuit breaker has changed state yet (all closed)") }
        print("PROVIDER".padding(20) + "STATE".padding(10) + "FAILURES".padding(10) + "SINCE".padding(22) + "PROBE AT")
        for breaker in breakers {
            print(
                breaker.provider.padding(20) + breaker.state.rawValue.padding(10) + "\(breaker.consecutiveFailures)".padding(10)
                    + (breaker.openedAt?.formatted(.iso8601) ?? "-").padding(22) + (breaker.retryAt?.formatted(.iso8601) ?? "-"))
        }
    }
}

/// `--budget-tokens N` and `--budget-usd X` for `keel start`.
struct BudgetOptions: ParsableArguments {
    // Unconditional, so that `--budget-tokens -5` reaches the check below instead of being
    // read as an unknown option `-5`.
    @Option(parsing: .unconditional, help: "Tokens the run may spend on LLM calls.") var budgetTokens: Int64?
    @Option(parsing: .unconditional, help: "Dollars the run may spend on LLM calls.") var budgetUsd: Double?

    func limit() throws -> SpendLimit? {
        guard budgetTokens != nil || budgetUsd != nil else { return nil }
        let limit = SpendLimit(maxTokens: budgetTokens, maxCostUSD: budgetUsd)
        do { try limit.validate() } catch let error as InvalidOptionsError { throw ValidationError(error.message) }
        return limit
    }
}

extension Spend {
    /// `1,234 tok $0.0123`, or `-` when nothing was spent.
    var summary: String {
        isZero ? "-" : "\(totalTokens) tok " + String(format: "$%.4f", costUSD)
    }
}
