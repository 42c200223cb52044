import Synchronization
import Testing

@testable import KeelRuntime

/// The worker's slots: a slot is given back once, however often its holder releases it (the
/// worker releases it when the activity's result is in line and again when the delivery is done),
/// and the turns go in the order they were reserved.
@Suite("Activity slots", .tags(.unit))
struct ActivitySlotsTests {
    final class Taken: Sendable {
        let order = Mutex([String]())
        var value: [String] { order.withLock { $0 } }
    }

    @Test func aSlotReleasedTwiceFreesOnePlaceAndTurnsGoInTheOrderReserved() async throws {
        let slots = ActivitySlots(1)
        let first = await slots.reserve().slot()
        let (early, late) = (slots.reserve(), slots.reserve())
        let taken = Taken()
        // The later turn's task starts waiting first: the earlier turn still gets the slot first.
        let waitingLate = Task {
            let slot = await late.slot()
            taken.order.withLock { $0.append("late") }
            return slot
        }
        try await Task.sleep(for: .milliseconds(50))
        let waitingEarly = Task {
            let slot = await early.slot()
            taken.order.withLock { $0.append("early") }
            return slot
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(taken.value.isEmpty)
        first.release()
        first.release()
        try await Task.sleep(for: .milliseconds(200))
        // The earlier turn got the place; the second release gave nothing more.
        #expect(taken.value == ["early"])
        (await waitingEarly.value).release()
        _ = await waitingLate.value
        #expect(taken.value == ["early", "late"])
    }
}
