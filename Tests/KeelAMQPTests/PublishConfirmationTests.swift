import Foundation
import KeelAMQP
import Synchronization
import Testing

@Suite("Publish confirmations")
struct PublishConfirmationTests {
    struct Nacked: Error {}

    /// A callback runs once, when the confirmation settles, with its error; waiters are resumed
    /// too, and a second settlement changes nothing.
    @Test func aCallbackRunsOnceWhenSettledAndWaitersToo() async throws {
        let confirmation = PublishConfirmation()
        let calls = Mutex([String]())
        confirmation.onSettle { error in calls.withLock { $0.append(error == nil ? "confirmed" : "failed") } }
        #expect(!confirmation.isSettled)
        #expect(calls.withLock { $0 }.isEmpty, "not before it settles")
        let waiter = Task { try await confirmation.wait() }
        confirmation.settle(Nacked())
        confirmation.settle(nil)
        #expect(confirmation.isSettled)
        #expect(calls.withLock { $0 } == ["failed"])
        await #expect(throws: Nacked.self) { try await waiter.value }
    }

    /// Registered after the confirmation settled, a callback runs at once with the outcome.
    @Test func aCallbackOnASettledConfirmationRunsAtOnce() {
        let calls = Mutex([String]())
        PublishConfirmation(settled: nil).onSettle { error in calls.withLock { $0.append(error == nil ? "confirmed" : "failed") }
        }
        PublishConfirmation(settled: Nacked()).onSettle { error in
            calls.withLock { $0.append(error == nil ? "confirmed" : "failed") }
        }
        #expect(calls.withLock { $0 } == ["confirmed", "failed"])
    }
}
