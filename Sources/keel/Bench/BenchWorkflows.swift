import Foundation
import Keel

/// Returns its input; the cheapest possible activity.
struct NoOp: Activity {
    static let name = "noop"
    func run(context: ActivityContext, input: Int) async throws -> Int { input }
}

/// Sleeps `milliseconds`, heartbeating every 100 ms with its progress.
struct Sleep: Activity {
    static let name = "sleep"
    struct Input: Codable, Sendable {
        var step: Int
        var milliseconds: Int
        /// false: sleeps without heartbeating (nil: heartbeats every 100 ms).
        var heartbeats: Bool?
    }
    func run(context: ActivityContext, input: Input) async throws -> Int {
        var slept = context.lastHeartbeatDetails(as: Int.self) ?? 0
        while slept < input.milliseconds {
            let slice = min(100, input.milliseconds - slept)
            try await Task.sleep(for: .milliseconds(slice))
            slept += slice
            if input.heartbeats != false { context.heartbeat(slept) }
        }
        return input.step
    }
}

/// `input` sequential no-op activities.
struct BenchSequential: Workflow {
    static let name = "bench-sequential"
    func run(context: WorkflowContext, input: Int) async throws -> Int {
        try BenchInput.check(input, "input (the number of steps)", in: 0...1_000_000)
        var sum = 0
        for step in 0..<input {
            sum += try await context.execute(NoOp.self, input: step, options: ActivityOptions(startToCloseTimeout: .seconds(60)))
        }
        return sum
    }
}

/// Sequential steps that each take a while, for fault tests and benches.
struct BenchSteps: Workflow {
    static let name = "bench-steps"
    /// Only `steps` is required.
    struct Input: Codable, Sendable {
        var steps: Int
        var milliseconds: Int?
        var heartbeatTimeoutSeconds: Double?
        var maximumAttempts: Int?
        /// false: the steps do not heartbeat.
        var heartbeats: Bool?
    }
    func run(context: WorkflowContext, input: Input) async throws -> Int {
        try BenchInput.check(input.steps, "steps", in: 0...1_000_000)
        try BenchInput.check(input.milliseconds ?? 0, "milliseconds", in: 0...86_400_000)
        try BenchInput.check(input.heartbeatTimeoutSeconds ?? 5, "heartbeatTimeoutSeconds", in: 0.001...86_400)
        try BenchInput.check(input.maximumAttempts ?? 5, "maximumAttempts", in: 0...1_000_000)
        let options = ActivityOptions(
            startToCloseTimeout: .seconds(120), heartbeatTimeout: .seconds(double: input.heartbeatTimeoutSeconds ?? 5),
            retryPolicy: RetryPolicy(initialInterval: .milliseconds(200), maximumAttempts: input.maximumAttempts ?? 5))
        var sum = 0
        for step in 0..<max(input.steps, 0) {
            sum += try await context.execute(
                Sleep.self, input: .init(step: step, milliseconds: input.milliseconds ?? 0, heartbeats: input.heartbeats),
                options: options)
        }
        return sum
    }
}

/// Runs one activity by type name on a task queue and returns its JSON result: lets scripts
/// call activities implemented in any language.
struct CallActivity: Workflow {
    static let name = "call-activity"
    struct Input: Codable, Sendable {
        var activityType: String
        var taskQueue: String?
        var input: JSONValue?
        var startToCloseSeconds: Double?
        var maximumAttempts: Int?
        /// Park the activity in the dead-letter queue when its attempts are used up, instead of failing.
        var park: Bool?
        /// The activity's heartbeat timeout.
        var heartbeatSeconds: Double?
    }
    func run(context: WorkflowContext, input: Input) async throws -> JSONValue {
        try BenchInput.check(input.startToCloseSeconds ?? 60, "startToCloseSeconds", in: 0.001...31_536_000)
        try BenchInput.check(input.maximumAttempts ?? 3, "maximumAttempts", in: 0...1_000_000)
        try BenchInput.check(input.heartbeatSeconds ?? 1, "heartbeatSeconds", in: 0.001...31_536_000)
        let options = ActivityOptions(
            taskQueue: input.taskQueue ?? "default", startToCloseTimeout: .seconds(double: input.startToCloseSeconds ?? 60),
            heartbeatTimeout: input.heartbeatSeconds.map { .seconds(double: $0) },
            retryPolicy: RetryPolicy(initialInterval: .milliseconds(200), maximumAttempts: input.maximumAttempts ?? 3),
            parkOnExhaustion: input.park ?? false)
        let result = try await context.execute(activityType: input.activityType, input: input.input ?? .null, options: options)
        return try result.decode(JSONValue.self)
    }
}

/// Input checks of the bench workflows: a value out of range fails the run with a clear error
/// instead of trapping in the coordinator (`0..<input` with a negative input would).
enum BenchInput {
    static func check<T: Comparable>(_ value: T, _ field: String, in range: ClosedRange<T>) throws {
        guard range.contains(value) else {
            throw ApplicationError(
                message: "\(field) is \(value); it must be between \(range.lowerBound) and \(range.upperBound)",
                type: "InvalidInput", isNonRetryable: true)
        }
    }
}

/// Runs `steps` no-op activities, then traps (an index out of range) when `trap` is set: a
/// stand-in for workflow code with a crashing bug, to see crash quarantine at work
/// (docs/operations.md, "Blocked runs").
struct FaultTrap: Workflow {
    static let name = "fault-trap"
    struct Input: Codable, Sendable {
        var steps: Int
        var trap: Bool
    }
    func run(context: WorkflowContext, input: Input) async throws -> Int {
        try BenchInput.check(input.steps, "steps", in: 0...1_000)
        for step in 0..<input.steps {
            _ = try await context.execute(NoOp.self, input: step, options: ActivityOptions(startToCloseTimeout: .seconds(60)))
        }
        let values = [input.steps]
        return values[input.trap ? 1 : 0]
    }
}

/// `calls` LLM calls, `parallel` at a time, each with a prompt of `promptCharacters` and an output
/// cap of `maxTokens`; counts what failed by type instead of failing (for `keel bench llm-capacity`).
struct BenchLLM: Workflow {
    static let name = "bench-llm"

    struct Input: Codable, Sendable {
        var calls: Int
        var parallel: Int?
        var maxTokens: Int?
        var promptCharacters: Int?
    }

    struct Output: Codable, Sendable {
        var answered: Int
        var failed: [String: Int]
    }

    func run(context: WorkflowContext, input: Input) async throws -> Output {
        try BenchInput.check(input.calls, "calls", in: 0...100_000)
        try BenchInput.check(input.parallel ?? 1, "parallel", in: 1...1_000)
        try BenchInput.check(input.maxTokens ?? 1024, "maxTokens", in: 1...1_000_000)
        try BenchInput.check(input.promptCharacters ?? 400, "promptCharacters", in: 0...1_000_000)
        let padding = String(repeating: "x", count: input.promptCharacters ?? 400)
        let workflowId = context.info.workflowId
        let maxTokens = input.maxTokens
        @Sendable func call(_ number: Int) async -> String? {
            do {
                _ = try await context.llm(LLMRequest(prompt: "\(workflowId) call \(number): \(padding)", maxTokens: maxTokens))
                return nil
            } catch let error as ActivityFailedError {
                return error.cause.type
            } catch let error as any KeelError {
                return error.errorType
            } catch {
                return "\(type(of: error))"
            }
        }
        var answered = 0
        var failed: [String: Int] = [:]
        await withTaskGroup(of: String?.self) { group in
            var next = 0
            while next < min(input.parallel ?? 1, input.calls) {
                let number = next
                group.addTask { await call(number) }
                next += 1
            }
            for await error in group {
                if let error { failed[error, default: 0] += 1 } else { answered += 1 }
                if next < input.calls {
                    let number = next
                    group.addTask { await call(number) }
                    next += 1
                }
            }
        }
        return Output(answered: answered, failed: failed)
    }
}
