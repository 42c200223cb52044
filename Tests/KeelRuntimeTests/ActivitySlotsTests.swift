import Synchronization
import Testing

@testable import KeelRuntime

/// The worker's slots: a slot is given back once, however often its holder releases it (the
/// worker releases it when the activity's result is in line and again when the delivery is done).
@Suite("Activity slots", .tags(.unit))
struct ActivitySlotsTests {
    final class Taken: Sendable {
        let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
    }

    @Test func aSlotReleasedTwiceFreesOnePlace() async throws {
        let slots = ActivitySlots(1)
        let first = await slots.acquire()
        let taken = Taken()
        let waiters = (0..<2).map { _ in
            Task {
                let slot = await slots.acquire()
                taken.count.withLock { $0 += 1 }
                return slot
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(taken.value == 0)
        first.release()
        first.release()
        try await Task.sleep(for: .milliseconds(200))
        // One waiter got the place; the second release gave nothing more.
        #expect(taken.value == 1)
        // Once that waiter gives it back, the other one gets it.
        var holders: [ActivitySlots.Slot] = []
        await withTaskGroup(of: ActivitySlots.Slot.self) { group in
            for waiter in waiters { group.addTask { await waiter.value } }
            for await slot in group {
                holders.append(slot)
                if holders.count == 1 { slot.release() }
            }
        }
        #expect(holders.count == 2)
        #expect(taken.value == 2)
    }
}
