import Keel

/// Returns its input; the cheapest possible activity.
struct NoOp: Activity {
    static let name = "noop"
    func run(context: ActivityContext, input: Int) async throws -> Int { input }
}

/// `input` sequential no-op activities.
struct BenchSequential: Workflow {
    static let name = "bench-sequential"
    func run(context: WorkflowContext, input: Int) async throws -> Int {
        var sum = 0
        for step in 0..<input {
            sum += try await context.execute(NoOp.self, input: step, options: ActivityOptions(startToCloseTimeout: .seconds(60)))
        }
        return sum
    }
}
