import Foundation
import Keel
import KeelTestKit
import Testing

/// `keel schedule` against real coordinator and worker processes.
@Suite("Schedules across a coordinator restart", .tags(.integration), .timeLimit(.minutes(3)))
struct ScheduleProcessTests {
    @Test func firingsMissedWhileTheCoordinatorWasDownRunOnceEach() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try deployment.startWorker()
        try await deployment.waitUntilCoordinatorServes()
        let created = try await deployment.keel([
            "schedule", "create", "tick", "--every", "2s", "--workflow", "bench-sequential", "--input", "2", "--overlap",
            "allow-all"
        ])
        #expect(created.status == 0, "\(created.output)")
        // A catch-up window shorter than the downtime: its missed firings are counted, not run.
        let recent = try await deployment.keel([
            "schedule", "create", "recent-only", "--every", "2s", "--workflow", "bench-sequential", "--input", "2",
            "--overlap", "allow-all", "--catchup-window", "1s"
        ])
        #expect(recent.status == 0, "\(recent.output)")
        let store = try deployment.store()
        func ticks(_ prefix: String) throws -> [String] {
            try store.runs(status: nil, limit: 1000).map(\.workflowId).filter { $0.hasPrefix(prefix + "-") }.sorted()
        }
        #expect(try await eventually(20) { try ticks("tick").count >= 1 }, "the schedule fires")

        // Down across at least two firings.
        let first = try #require(deployment.coordinator)
        try await offPool { first.terminate() }
        let downAt = Date()
        try await Task.sleep(for: .seconds(5))
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        let upAt = Date()
        try await Task.sleep(for: .seconds(1))

        // Every two-second slot from the first firing on has exactly one run: none lost, none twice.
        let ids = try ticks("tick")
        let stamps = DateFormatter()
        stamps.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        stamps.timeZone = TimeZone(identifier: "UTC")
        let times = ids.compactMap { stamps.date(from: String($0.dropFirst("tick-".count))) }
        #expect(times.count == ids.count, "\(ids)")
        #expect(Set(ids).count == ids.count)
        let gaps = zip(times, times.dropFirst()).map { $1.timeIntervalSince($0) }
        #expect(gaps.allSatisfy { $0 == 2 }, "\(ids)")
        let missedSlots = times.filter { $0 > downAt && $0 < upAt }
        #expect(missedSlots.count >= 2, "firings of the downtime ran after the restart: \(ids)")

        let described = try await deployment.keel(["schedule", "describe", "recent-only", "--json"])
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let description = try decoder.decode(ScheduleDescription.self, from: Data(described.output.utf8))
        let missed = description.schedule.missed
        #expect(missed >= 1, "\(described.output)")
        // Its firings of the downtime, missed by more than a second when the new coordinator
        // looked (the time of its `missed` note), did not run.
        let lookedAt = try #require(description.schedule.recent.first { $0.outcome == .missed }?.time)
        let recentTimes = try ticks("recent-only").compactMap { stamps.date(from: String($0.dropFirst("recent-only-".count))) }
        #expect(
            recentTimes.filter { $0 > downAt.addingTimeInterval(0.5) && $0 < lookedAt.addingTimeInterval(-1.01) }.isEmpty,
            "\(recentTimes), looked at \(lookedAt)")

        let listed = try await deployment.keel(["schedule", "list"])
        #expect(listed.output.contains("tick") && listed.output.contains("every 2 s"), "\(listed.output)")
        for name in ["tick", "recent-only"] {
            #expect(try await deployment.keel(["schedule", "delete", name]).status == 0)
        }
    }

    @Test func badSchedulesAreRefusedByNameAndNothingIsStored() async throws {
        let deployment = try Deployment()
        try deployment.startCoordinator()
        try await deployment.waitUntilCoordinatorServes()
        let cases: [([String], String)] = [
            (["--cron", "0 25 * * *", "--workflow", "bench-sequential"], "hour field '25': 25 is out of range 0-23"),
            (["--cron", "0 3 * * *", "--workflow", "no-such-workflow"], "no workflow named 'no-such-workflow'"),
            (
                ["--cron", "0 3 * * *", "--workflow", "bench-sequential", "--timezone", "Europe/Pariss"],
                "unknown time zone 'Europe/Pariss'"
            ),
            (["--every", "15x", "--workflow", "bench-sequential"], "--every '15x' is not a duration"),
            (
                ["--every", "15m", "--workflow", "bench-sequential", "--overlap", "sometimes"],
                "--overlap must be one of skip, buffer-one, allow-all"
            )
        ]
        for (arguments, reason) in cases {
            let refused = try await deployment.keel(["schedule", "create", "bad"] + arguments)
            #expect(refused.status != 0)
            #expect(refused.output.contains(reason), "\(refused.output)")
        }
        #expect(try deployment.store().schedules().isEmpty)
        let missing = try await deployment.keel(["schedule", "describe", "nope"])
        #expect(missing.status != 0)
        #expect(missing.output.contains("no schedule named nope"), "\(missing.output)")
    }
}
