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
        let first = try #require(await slots.reserve().slot())
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
        (await waitingEarly.value)?.release()
        _ = await waitingLate.value
        #expect(taken.value == ["early", "late"])
    }

    final class Windows: Sendable {
        let given = Mutex([Int]())
        var value: [Int] { given.withLock { $0 } }
    }

    /// The prefetch window follows the slots whose activities' tasks are acknowledged: one more
    /// than the slots while there is none, else the other slots, none once all are. Then the
    /// waiting turns are handed back, and so is each turn reserved until one of those slots is
    /// released.
    @Test func theWindowFollowsAcknowledgedActivitiesAndTurnsAreHandedBackWhenEverySlotHoldsOne() async throws {
        let windows = Windows()
        let slots = ActivitySlots(2) { window in windows.given.withLock { $0.append(window) } }
        let first = try #require(await slots.reserve().slot())
        let second = try #require(await slots.reserve().slot())
        let waiting = slots.reserve()
        let waited = Task { await waiting.slot() }
        first.acknowledgedEarly()
        first.acknowledgedEarly()
        #expect(windows.value == [1], "the other slot, without the one more")
        second.acknowledgedEarly()
        #expect(windows.value == [1, 0])
        #expect(await waited.value == nil, "the waiting turn was handed back")
        #expect(await slots.reserve().slot() == nil, "a turn reserved meanwhile is handed back at once")
        first.release()
        first.release()
        #expect(windows.value == [1, 0, 1])
        let next = try #require(await slots.reserve().slot(), "the released slot is free again")
        // A slot released before its acknowledgement changes nothing.
        next.release()
        next.acknowledgedEarly()
        second.release()
        #expect(windows.value == [1, 0, 1, 3], "one more than the slots again")
        let both = [await slots.reserve().slot(), await slots.reserve().slot()]
        #expect(both.allSatisfy { $0 != nil })
    }
}
