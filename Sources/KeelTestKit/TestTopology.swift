import Foundation
import Keel

extension Topology {
    /// A namespace of its own, so tests running in parallel never share queues.
    public static func forTest() -> Topology {
        Topology(namespace: "test-\(UUID().uuidString.prefix(8).lowercased())")
    }
}
