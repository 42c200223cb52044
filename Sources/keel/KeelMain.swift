import ArgumentParser
import Keel
import KeelCommandLine
import KeelExamples

/// `keel`: the command line of `KeelCommandLine` with the reference pipelines, the workflows the
/// benches and tests use, and `keel bench`.
@main
struct KeelMain: KeelApplication {
    static var commandName: String { "keel" }
    static var workflows: WorkflowRegistry { BuiltIn.workflows }
    static func activities(configuration: KeelConfiguration) -> ActivityRegistry { BuiltIn.activities }
    static var extraCommands: [any ParsableCommand.Type] { [BenchCommand.self] }
}

/// The workflows and activities compiled into `keel`.
enum BuiltIn {
    static var workflows: WorkflowRegistry {
        var registry = WorkflowRegistry()
        registry.register(BenchSequential.self)
        registry.register(BenchSteps.self)
        registry.register(BenchLLM.self)
        registry.register(FaultTrap.self)
        registry.register(CallActivity.self)
        registry.register(DocumentProcessing.self)
        registry.register(InvoiceProcessing.self)
        registry.register(TripBooking.self)
        registry.register(SummaryApproval.self)
        registry.register(AgentLoop.self)
        registry.register(GPUInference.self)
        return registry
    }

    static var activities: ActivityRegistry {
        var registry = ActivityRegistry()
        registry.register(NoOp())
        registry.register(Sleep())
        registry.register(FetchDocument())
        registry.register(PostBill())
        registry.register(TripBooking.Book())
        registry.register(TripBooking.CancelBooking())
        return registry
    }
}
