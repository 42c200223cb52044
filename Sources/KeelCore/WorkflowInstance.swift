import Foundation
import Logging

/// One workflow run in memory: feeds history events to the workflow code and collects the
/// commands it issues.
///
/// The same path serves replay (events from the store) and live execution (new events), which
/// is what makes a restarted coordinator continue exactly where it stopped.
///
/// Not thread-safe: its owner (the coordinator, or `keel replay`) calls it serially.
public final class WorkflowInstance: @unchecked Sendable {
    public let context: WorkflowContext
    public let definition: WorkflowDefinition
    private let executor = DeterministicExecutor()
    private var started = false

    /// What one activation produced.
    public struct Activation: Sendable {
        /// Commands issued beyond recorded history, to be recorded now.
        public var commands: [Command]
        /// Set when the code diverged from history; the run must stop.
        public var nondeterminism: NonDeterminismError?
    }

    public init(
        definition: WorkflowDefinition, info: WorkflowInfo, randomSeed: UInt64, startTime: Date,
        payloadLimit: Int = Payload.defaultSizeLimit, logger: Logger = Logger(label: "keel.workflow"),
        environment: WorkflowEnvironment = WorkflowEnvironment()
    ) {
        self.definition = definition
        self.context = WorkflowContext(
            info: info, seed: randomSeed, startTime: startTime, payloadLimit: payloadLimit, logger: logger,
            environment: environment)
    }

    /// The closing command once the workflow has returned or thrown.
    public var outcome: Command? { context.outcome }

    /// Re-runs the workflow code over stored history. Commands the code issues must match the
    /// recorded ones in order; the result holds the divergence if they do not.
    public func replay(_ events: [HistoryEvent]) -> Activation {
        context.replayCommands = events.filter { $0.kind.isCommand }
        context.replayCursor = 0
        context.replaying = true
        for event in events where !event.kind.isCommand {
            if context.nondeterminism != nil { break }
            if context.replayCursor < context.replayCommands.count,
                context.replayCommands[context.replayCursor].id < event.id
            {
                let missing = context.replayCommands[context.replayCursor]
                _ = context.diverged(
                    eventId: missing.id, recorded: missing.summary,
                    issued: "nothing before event #\(event.id) \(event.kind.rawValue)")
                break
            }
            handle(event)
        }
        if context.nondeterminism == nil, context.replayCursor < context.replayCommands.count {
            let missing = context.replayCommands[context.replayCursor]
            _ = context.diverged(eventId: missing.id, recorded: missing.summary, issued: "nothing")
        }
        context.replaying = false
        context.historyLength = events.last?.id ?? 0
        return drain()
    }

    /// Applies one new event and returns the commands the workflow issued in response. For
    /// `workflowStarted`, `startAttributes` are the event's attributes when the caller has them
    /// at hand (a new run), sparing their decoding.
    public func apply(_ event: HistoryEvent, startAttributes: WorkflowStartedAttributes? = nil) -> Activation {
        handle(event, startAttributes: startAttributes)
        return drain()
    }

    /// Answers a query from the workflow's current state.
    public func query(_ name: String, argument: Payload?) throws -> Payload {
        guard let handler = context.queryHandlers[name] else {
            let known = context.queryHandlers.keys.sorted().joined(separator: ", ")
            throw QueryError(
                message: "workflow \(context.info.workflowId) has no query '\(name)'"
                    + (known.isEmpty ? " (it registers none)" : "; it answers: \(known)"))
        }
        return try handler(argument)
    }

    /// Releases the workflow's suspended tasks. Call before dropping an instance that has not
    /// finished.
    public func evict() {
        context.evict()
        executor.runUntilIdle()
    }

    private func handle(_ event: HistoryEvent, startAttributes: WorkflowStartedAttributes? = nil) {
        context.currentTime = event.time
        context.historyLength = event.id
        switch event.kind {
        case .workflowStarted:
            guard !started else { return }
            started = true
            let attributes = startAttributes ?? (try? event.attributes?.decode(WorkflowStartedAttributes.self))
            context.spendLimit = attributes?.options.budget
            // A continued run starts with what the runs before it spent.
            if let carried = attributes?.carriedSpend { context.spent += carried }
            start(input: event.payload ?? .null)
        case .activityParked:
            countSpend(event)
            return
        case .activityCompleted, .activityFailed, .activityTimedOut:
            countSpend(event)
            guard event.endsActivity else { return }
            context.resolveActivity(event)
        case .timerFired:
            if let ref = event.ref { context.fireTimer(ref) }
        case .signalReceived:
            context.deliverSignal(name: event.name ?? "", payload: event.payload ?? .null)
        case .cancelRequested:
            context.requestCancellation()
        case .childWorkflowCompleted, .childWorkflowFailed:
            // The parent is charged with what its child spent.
            if let spend = Spend.charged(by: event) { context.spent += spend }
            context.resolveChild(event)
        default:
            return
        }
        runToQuiescence()
    }

    /// Adds an attempt's usage to the budget (also while replaying: it is part of history) and,
    /// for new events only, feeds its per-provider outcomes to the circuit breakers.
    private func countSpend(_ event: HistoryEvent) {
        if let spend = Spend.reported(by: event) { context.spent += spend }
        if event.failure?.retryState == .willRetry { context.retries += 1 }
        if !context.replaying { context.environment.breakers.observe(event, now: event.time) }
    }

    /// Runs workflow code until every task waits on something only a new event can give.
    private func runToQuiescence() {
        repeat {
            executor.runUntilIdle()
        } while context.resumeSatisfiedCondition()
    }

    private func start(input: Payload) {
        let context = self.context
        let body = definition.body
        Task(executorPreference: executor) {
            do {
                let result = try await body(context, input)
                context.finish(.completeWorkflow(result: result))
            } catch let request as ContinueAsNewRequest {
                context.finish(.continueAsNew(input: request.input))
            } catch is CancelledError where context.cancelRequested {
                context.finish(.cancelWorkflow)
            } catch is NonDeterminismError {
                // Recorded in the context; the run stops.
            } catch is WorkflowEvictedError {
                // The instance is being released.
            } catch {
                context.finish(.failWorkflow(failure: Failure(error)))
            }
        }
    }

    private func drain() -> Activation {
        defer { context.issued.removeAll() }
        if let error = context.nondeterminism {
            return Activation(commands: [], nondeterminism: error)
        }
        return Activation(commands: context.issued, nondeterminism: nil)
    }
}

/// A query could not be answered.
public struct QueryError: KeelError {
    public var message: String
    public var errorType: String { "QueryFailed" }
}
