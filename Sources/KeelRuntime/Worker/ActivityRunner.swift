import Foundation
import KeelCore

/// Runs one activity attempt: looks the type up, decodes the input, enforces the attempt's
/// start-to-close deadline on the worker side, and turns whatever happens into an outcome.
/// Every transport's worker uses it.
public struct ActivityRunner: Sendable {
    public let activities: ActivityRegistry
    public let identity: String

    public init(activities: ActivityRegistry, identity: String) {
        self.activities = activities
        self.identity = identity
    }

    /// Runs the attempt in a task of its own and returns its outcome; cancelling the caller's
    /// task cancels the attempt.
    public func run(
        _ task: ActivityTask, heartbeat: @escaping @Sendable (Payload?) -> Void
    ) async -> ActivityResult.Outcome {
        let cancellation = AttemptCancellation()
        let execution = Task { await run(task, cancellation: cancellation, heartbeat: heartbeat) }
        cancellation.attach { execution.cancel() }
        return await withTaskCancellationHandler {
            await execution.value
        } onCancel: {
            execution.cancel()
        }
    }

    /// Runs the attempt in the current task, which `cancellation` cancels: its start-to-close
    /// deadline does, and the outcome is then the timeout. Cancelled by other means (the
    /// coordinator's cancel), the outcome is the activity's, with what it had done (an LLM call's
    /// usage so far). Ends `cancellation`.
    public func run(
        _ task: ActivityTask, cancellation: AttemptCancellation, heartbeat: @escaping @Sendable (Payload?) -> Void
    ) async -> ActivityResult.Outcome {
        let deadline = task.startToCloseTimeout.map { seconds in
            Alarms.shared.schedule(at: .now + .seconds(double: seconds)) { cancellation.expire() }
        }
        let outcome: ActivityResult.Outcome
        do {
            let definition = try activities.definition(named: task.activityType)
            let context = ActivityContext(task: task, worker: identity, heartbeat: heartbeat)
            outcome = .completed(try await definition.run(context: context, input: task.input))
        } catch {
            outcome = .failed(Failure(error))
        }
        if let deadline { Alarms.shared.cancel(deadline) }
        return cancellation.end() ? .failed(Failure.timeout(.startToClose)) : outcome
    }
}
