import Foundation
import KeelLLM

/// What a worker process was started with, handed to an application's `activities(configuration:)`
/// so its activities can be built from it: the LLM providers of `keel.yaml` (or the `KEEL_LLM_*`
/// variables), the task queue it serves, and its environment.
public struct KeelConfiguration: Sendable {
    /// The `llm:` section, with no providers when none is configured.
    public var llm: LLMConfiguration
    /// The task queue this worker serves.
    public var taskQueue: String
    public var environment: [String: String]

    public init(
        llm: LLMConfiguration = LLMConfiguration(providers: []), taskQueue: String = "default",
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.llm = llm
        self.taskQueue = taskQueue
        self.environment = environment
    }
}
