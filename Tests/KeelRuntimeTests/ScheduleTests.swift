import Foundation
import Keel
import KeelTestKit
import Testing

/// Schedules in the coordinator, on a manual clock: the calendar, the overlap policies, the
/// catch-up window, restarts, and refusals that store nothing.
@Suite("Schedules in the coordinator")
struct ScheduleTests {
    /// Every minute, starting `sleep-then-approve` (open until terminated).
    static func everyMinute(_ name: String, overlap: ScheduleOverlap, catchup: Double? = nil) -> ScheduleSpec {
        ScheduleSpec(
            name: name, every: 60, workflowType: SleepThenApprove.name, input: try! Payload(encoding: "s", field: "input"),
            overlap: overlap, catchupWindow: catchup)
    }

    static func openRuns(_ engine: Engine) throws -> [String] {
        try engine.store.openRuns().map(\.workflowId).sorted()
    }

    @Test func skipLeavesOutFiringsWhileTheLastRunIsOpen() async throws {
        let engine = try Engine()
        let t0 = engine.clock.now()
        try await engine.coordinator.createSchedule(Self.everyMinute("s", overlap: .skip))
        #expect(try await engine.coordinator.fireDueSchedules().isEmpty, "nothing before the first minute")
        engine.clock.advance(by: 60)
        let first = try await engine.coordinator.fireDueSchedules()
        #expect(first.map(\.outcome) == [.started])
        #expect(first.first?.workflowId == "s-" + ScheduleSpec.stamp(t0.addingTimeInterval(60)))
        engine.clock.advance(by: 60)
        #expect(try await engine.coordinator.fireDueSchedules().map(\.outcome) == [.skippedOverlap])
        try await engine.coordinator.terminate(workflowId: try #require(first.first?.workflowId), reason: "done")
        engine.clock.advance(by: 60)
        #expect(try await engine.coordinator.fireDueSchedules().map(\.outcome) == [.started])
        let record = try await engine.coordinator.schedule(named: "s")
        #expect((record.started, record.skippedOverlap, record.missed) == (2, 1, 0))
        #expect(try Self.openRuns(engine) == ["s-" + ScheduleSpec.stamp(t0.addingTimeInterval(180))])
    }

    @Test func bufferOneStartsOneWaitingFiringWhenTheRunCloses() async throws {
        let engine = try Engine()
        let t0 = engine.clock.now()
        try await engine.coordinator.createSchedule(Self.everyMinute("b", overlap: .bufferOne))
        engine.clock.advance(by: 60)
        let first = try #require(try await engine.coordinator.fireDueSchedules().first?.workflowId)
        engine.clock.advance(by: 60)
        #expect(try await engine.coordinator.fireDueSchedules().map(\.outcome) == [.buffered])
        engine.clock.advance(by: 60)
        #expect(try await engine.coordinator.fireDueSchedules().map(\.outcome) == [.skippedOverlap])
        try await engine.coordinator.terminate(workflowId: first, reason: "done")
        // The buffered firing (minute 2) starts under its own time's id, without waiting for minute 4.
        let buffered = try await engine.coordinator.fireDueSchedules()
        #expect(buffered.map(\.outcome) == [.started])
        #expect(buffered.first?.workflowId == "b-" + ScheduleSpec.stamp(t0.addingTimeInterval(120)))
        #expect(try await engine.coordinator.schedule(named: "b").buffered == nil)
    }

    @Test func allowAllStartsEveryFiringAndAFiringStartedTwiceMakesOneRun() async throws {
        let engine = try Engine()
        try await engine.coordinator.createSchedule(Self.everyMinute("a", overlap: .allowAll))
        engine.clock.advance(by: 180)
        #expect(try await engine.coordinator.fireDueSchedules().map(\.outcome) == [.started, .started, .started])
        #expect(try Self.openRuns(engine).count == 3)
        // Two triggers at the same instant are the same firing: one run.
        engine.clock.advance(by: 10)
        let one = try await engine.coordinator.triggerSchedule("a")
        let two = try await engine.coordinator.triggerSchedule("a")
        #expect(one.workflowId == two.workflowId)
        #expect(try Self.openRuns(engine).count == 4)
        #expect(try engine.store.latestRun(workflowId: try #require(one.workflowId))?.status == .running)
    }

    @Test func afterDowntimeMissedFiringsInsideTheWindowRunOnceEachAndOlderOnesAreCounted() async throws {
        let engine = try Engine()
        let t0 = engine.clock.now()
        try await engine.coordinator.createSchedule(Self.everyMinute("c", overlap: .allowAll, catchup: 150))
        // The coordinator is down for ten minutes.
        await engine.coordinator.shutdown()
        engine.clock.advance(by: 600)
        try await engine.restart()
        let firings = try await engine.coordinator.fireDueSchedules()
        #expect(
            firings.map(\.workflowId) == [480, 540, 600].map { "c-" + ScheduleSpec.stamp(t0.addingTimeInterval($0)) })
        let record = try await engine.coordinator.schedule(named: "c")
        #expect(record.missed == 7)
        #expect(record.recent.last?.outcome == .missed)
        #expect(record.nextFireAt == t0.addingTimeInterval(660))
        // Nothing fires twice: a restart now finds the schedule moved on.
        try await engine.restart()
        #expect(try await engine.coordinator.fireDueSchedules().isEmpty)
        #expect(try Self.openRuns(engine).count == 3)
    }

    @Test func pausedSchedulesDoNotFireAndDoNotCatchUp() async throws {
        let engine = try Engine()
        let t0 = engine.clock.now()
        try await engine.coordinator.createSchedule(Self.everyMinute("p", overlap: .allowAll))
        _ = try await engine.coordinator.pauseSchedule("p", note: "maintenance")
        engine.clock.advance(by: 300)
        #expect(try await engine.coordinator.fireDueSchedules().isEmpty)
        let active = try await engine.coordinator.unpauseSchedule("p")
        #expect(active.nextFireAt == t0.addingTimeInterval(360))
        try await engine.coordinator.deleteSchedule("p")
        try await engine.restart()
        #expect(try engine.store.schedules().isEmpty)
    }

    @Test func anInvalidScheduleIsRefusedWithItsReasonAndNothingIsStored() async throws {
        let engine = try Engine()
        func reason(_ spec: ScheduleSpec) async -> String {
            do {
                try await engine.coordinator.createSchedule(spec)
                return "created"
            } catch {
                return "\(error)"
            }
        }
        #expect(await reason(ScheduleSpec(name: "w", every: 60, workflowType: "no-such-workflow")).contains("no-such-workflow"))
        #expect(
            await reason(ScheduleSpec(name: "c", cron: "0 0 * * funday", workflowType: SleepThenApprove.name))
                .contains("day-of-week field 'funday'"))
        #expect(
            await reason(
                ScheduleSpec(name: "z", cron: "0 0 * * *", workflowType: SleepThenApprove.name, timeZone: "Europe/Pariss")
            )
            .contains("unknown time zone 'Europe/Pariss'"))
        #expect(try engine.store.schedules().isEmpty)
        try await engine.coordinator.createSchedule(Self.everyMinute("twice", overlap: .skip))
        #expect(await reason(Self.everyMinute("twice", overlap: .skip)).contains("exists"))
    }
}
