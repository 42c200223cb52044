import Keel
import KeelCommandLine
import Starter

/// `triage coordinator`, `triage worker --queue llm`, `triage replay`, …: every `keel`
/// subcommand, for this package's workflows and activities.
@main
struct Triage: KeelApplication {
    static var workflows: WorkflowRegistry { Starter.workflows }

    static func activities(configuration: KeelConfiguration) -> ActivityRegistry {
        Starter.activities(configuration: configuration)
    }
}
