import Foundation

/// A workflow: ordinary async Swift code whose every step is recorded and replayed.
///
/// Workflow code must be deterministic: it may await only what its ``WorkflowContext`` gives
/// (activities, timers, signals, conditions, child workflows) and must take time, randomness and
/// identifiers from the context.
///
/// ```swift
/// struct Greet: Workflow {
///     static let name = "greet"
///     func run(context: WorkflowContext, input: String) async throws -> String {
///         try await context.execute(
///             MakeGreeting.self, input: input,
///             options: .init(startToCloseTimeout: .seconds(30)))
///     }
/// }
/// ```
///
/// A workflow that answers queries or handles signals keeps its state in a `final class` and
/// registers the handlers on the context at the start of `run`.
public protocol Workflow: SendableMetatype {
    associatedtype Input: Codable & Sendable
    associatedtype Output: Codable & Sendable
    /// The stable type name recorded in history. Changing it orphans running workflows.
    static var name: String { get }
    init()
    func run(context: WorkflowContext, input: Input) async throws -> Output
}

/// An activity: a unit of work with side effects (an LLM call, an HTTP post), run by a worker,
/// retried by the engine.
///
/// ```swift
/// struct MakeGreeting: Activity {
///     static let name = "make-greeting"
///     func run(context: ActivityContext, input: String) async throws -> String { "Hello, \(input)" }
/// }
/// ```
public protocol Activity: Sendable {
    associatedtype Input: Codable & Sendable
    associatedtype Output: Codable & Sendable
    /// The stable type name the task is routed and recorded by.
    static var name: String { get }
    func run(context: ActivityContext, input: Input) async throws -> Output
}

/// An empty value for workflows, activities and signals that take or return nothing.
public struct Empty: Codable, Sendable, Hashable {
    public init() {}
}
