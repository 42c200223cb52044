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

    public func run(
        _ task: ActivityTask, heartbeat: @escaping @Sendable (Payload?) -> Void
    ) async -> ActivityResult.Outcome {
        let definition: ActivityDefinition
        do {
            definition = try activities.definition(named: task.activityType)
        } catch {
            return .failed(Failure(error))
        }
        let context = ActivityContext(task: task, worker: identity, heartbeat: heartbeat)
        do {
            let output: Payload
            if let timeout = task.startToCloseTimeout {
                output = try await withThrowingTaskGroup(of: Payload?.self) { group in
                    group.addTask { try await definition.run(context: context, input: task.input) }
                    group.addTask {
                        // Cancelled (the attempt was): the activity's own outcome says what
                        // happened, with what it had done (an LLM call's usage so far).
                        do { try await Task.sleep(for: .seconds(double: timeout)) } catch { return nil }
                        throw Failure.timeout(.startToClose)
                    }
                    defer { group.cancelAll() }
                    while let next = try await group.next() {
                        if let output = next { return output }
                    }
                    throw CancellationError()
                }
            } else {
                output = try await definition.run(context: context, input: task.input)
            }
            return .completed(output)
        } catch {
            return .failed(Failure(error))
        }
    }
}
