import Foundation

/// A workflow type, erased so the engine can run it by name.
public struct WorkflowDefinition: Sendable {
    public let name: String
    let body: @Sendable (WorkflowContext, Payload) async throws -> Payload

    public init<W: Workflow>(_ workflow: W.Type) {
        name = W.name
        body = { context, input in
            let value = try input.decode(W.Input.self, field: "input of workflow \(W.name)")
            let output = try await W().run(context: context, input: value)
            return try Payload(encoding: output, field: "result of workflow \(W.name)", limit: context.payloadLimit)
        }
    }
}

/// An activity implementation, erased so a worker can run it by name.
public struct ActivityDefinition: Sendable {
    public let name: String
    let body: @Sendable (ActivityContext, Payload) async throws -> Payload

    public init<A: Activity>(_ activity: A) {
        name = A.name
        body = { context, input in
            let value = try input.decode(A.Input.self, field: "input of activity \(A.name)")
            let output = try await activity.run(context: context, input: value)
            return try Payload(encoding: output, field: "result of activity \(A.name)")
        }
    }

    /// Runs the activity with a JSON input.
    public func run(context: ActivityContext, input: Payload) async throws -> Payload {
        try await body(context, input)
    }
}

/// The workflows a coordinator can run.
public struct WorkflowRegistry: Sendable {
    private var definitions: [String: WorkflowDefinition] = [:]

    public init() {}

    public init(_ workflows: [any Workflow.Type]) {
        for workflow in workflows { register(workflow) }
    }

    public mutating func register<W: Workflow>(_ workflow: W.Type) {
        definitions[W.name] = WorkflowDefinition(workflow)
    }

    public func definition(named name: String) throws -> WorkflowDefinition {
        guard let definition = definitions[name] else {
            throw UnknownTypeError(kind: "workflow", name: name, known: names)
        }
        return definition
    }

    public var names: [String] { definitions.keys.sorted() }
}

/// The activities a worker can run.
public struct ActivityRegistry: Sendable {
    private var definitions: [String: ActivityDefinition] = [:]

    public init() {}

    public mutating func register<A: Activity>(_ activity: A) {
        definitions[A.name] = ActivityDefinition(activity)
    }

    public func definition(named name: String) throws -> ActivityDefinition {
        guard let definition = definitions[name] else {
            throw UnknownTypeError(kind: "activity", name: name, known: names)
        }
        return definition
    }

    public var names: [String] { definitions.keys.sorted() }
}

/// A type name nobody registered.
public struct UnknownTypeError: KeelError {
    public var kind: String
    public var name: String
    public var known: [String]
    public init(kind: String, name: String, known: [String]) {
        self.kind = kind
        self.name = name
        self.known = known
    }
    public var errorType: String { "Unknown\(kind.capitalized)Type" }
    public var isNonRetryable: Bool { true }
    public var message: String {
        "no \(kind) named '\(name)' is registered here"
            + (known.isEmpty ? "" : " (registered: \(known.joined(separator: ", ")))")
    }
}
