import Foundation
import Synchronization

/// What a coordinator shares with every workflow run it hosts: live services whose answers the
/// workflow records in history before using them.
public struct WorkflowEnvironment: Sendable {
    public var breakers: CircuitBreakers
    /// The coordinator's LLM provider names in failover order; their breakers gate LLM calls
    /// that do not name providers themselves.
    public var providerChain: [String]

    public init(breakers: CircuitBreakers = CircuitBreakers(), providerChain: [String] = []) {
        self.breakers = breakers
        self.providerChain = providerChain
    }
}
