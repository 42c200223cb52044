import Foundation
import KeelCore
import Testing

@Suite("Cron expressions, intervals and schedule specs")
struct ScheduleCalendarTests {
    static let utc = TimeZone(identifier: "UTC")!
    static let paris = TimeZone(identifier: "Europe/Paris")!

    static func date(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }

    static func times(_ cron: String, after start: String, _ count: Int, in zone: TimeZone = utc) throws -> [String] {
        let expression = try CronExpression(cron)
        var time = date(start)
        var times: [String] = []
        for _ in 0..<count {
            guard let next = expression.next(after: time, in: zone) else { break }
            times.append(next.formatted(.iso8601))
            time = next
        }
        return times
    }

    @Test func stepsListsAndRanges() throws {
        #expect(
            try Self.times("*/15 * * * *", after: "2026-11-30T10:07:00Z", 3) == [
                "2026-11-30T10:15:00Z", "2026-11-30T10:30:00Z", "2026-11-30T10:45:00Z"
            ])
        #expect(
            try Self.times("0 8-18/4 * * *", after: "2026-11-30T09:00:00Z", 4) == [
                "2026-11-30T12:00:00Z", "2026-11-30T16:00:00Z", "2026-12-01T08:00:00Z", "2026-12-01T12:00:00Z"
            ])
        #expect(
            try Self.times("30 9 1,15 * *", after: "2026-11-30T00:00:00Z", 2) == ["2026-12-01T09:30:00Z", "2026-12-15T09:30:00Z"])
        // Exactly on a firing: the next one, not the same.
        #expect(try Self.times("@hourly", after: "2026-11-30T10:00:00Z", 1) == ["2026-11-30T11:00:00Z"])
    }

    @Test func namesAndTheDayRule() throws {
        // 2026-11-30 is a Monday.
        #expect(
            try Self.times("0 9 * * mon-fri", after: "2026-12-04T10:00:00Z", 2) == [
                "2026-12-07T09:00:00Z", "2026-12-08T09:00:00Z"
            ])
        #expect(try Self.times("0 0 1 jan *", after: "2026-11-30T00:00:00Z", 1) == ["2027-01-01T00:00:00Z"])
        // Day of month and day of week both restricted: either matches (the 1st, or a Sunday).
        #expect(
            try Self.times("0 0 1 * sun", after: "2026-11-30T00:00:00Z", 3) == [
                "2026-12-01T00:00:00Z", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"
            ])
        // 7 is Sunday too; 29 February waits for a leap year.
        #expect(try Self.times("0 0 * * 7", after: "2026-11-30T00:00:00Z", 1) == ["2026-12-06T00:00:00Z"])
        #expect(try Self.times("0 0 29 2 *", after: "2026-11-30T00:00:00Z", 1) == ["2028-02-29T00:00:00Z"])
        #expect(try Self.times("0 0 30 2 *", after: "2026-11-30T00:00:00Z", 1).isEmpty)
    }

    @Test func timeZonesAndDaylightSaving() throws {
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        #expect(try Self.times("0 9 * * *", after: "2026-11-30T12:00:00Z", 1, in: Self.paris) == ["2026-12-01T08:00:00Z"])
        #expect(try Self.times("0 9 * * *", after: "2027-06-01T12:00:00Z", 1, in: Self.paris) == ["2027-06-02T07:00:00Z"])
        // 02:30 does not exist in Paris on 2027-03-28 (clocks go from 02:00 to 03:00): no firing that day.
        #expect(
            try Self.times("30 2 * * *", after: "2027-03-27T12:00:00Z", 2, in: Self.paris) == [
                "2027-03-29T00:30:00Z", "2027-03-30T00:30:00Z"
            ])
    }

    @Test(arguments: [
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("* * *", "expected 5 fields"),
        ("0 25 * * *", "hour field '25': 25 is out of range 0-23"),
        ("0 0 * foo *", "month field 'foo': 'foo' is not a number"),
        ("*/0 * * * *", "step '0' is not a positive number"),
        ("0 0 10-5 * *", "range 10-5 runs backwards")
    ])
    func badExpressionsAreNamed(expression: String, reason: String) {
        #expect {
            try CronExpression(expression)
        } throws: { error in
            let message = (error as? ScheduleError)?.message ?? ""
            return message.contains("'\(expression)'") && message.contains(reason)
        }
    }

    @Test func intervalsCountFromTheEpoch() {
        let spec = ScheduleSpec(name: "q", every: 900, workflowType: "w")
        #expect(spec.next(after: Self.date("2026-11-30T10:07:12Z"))?.formatted(.iso8601) == "2026-11-30T10:15:00Z")
        #expect(spec.next(after: Self.date("2026-11-30T10:15:00Z"))?.formatted(.iso8601) == "2026-11-30T10:30:00Z")
    }

    @Test func firingsHaveIdsOfTheirOwn() {
        let spec = ScheduleSpec(name: "digest", cron: "0 * * * *", workflowType: "w", idTemplate: "daily-{schedule}-{time}")
        let time = Self.date("2026-11-30T14:00:00Z")
        #expect(spec.workflowId(at: time) == "daily-digest-20261130T140000Z")
        #expect(spec.requestId(at: time) == "schedule:digest:20261130T140000Z")
        #expect(ScheduleSpec(name: "d", every: 60, workflowType: "w").workflowId(at: time) == "d-20261130T140000Z")
    }

    @Test func badSpecsAreRefusedWithTheReason() {
        func reason(_ spec: ScheduleSpec) -> String {
            do {
                try spec.validate()
                return "valid"
            } catch {
                return error.message
            }
        }
        #expect(reason(ScheduleSpec(name: "ok", cron: "0 * * * *", workflowType: "w", timeZone: "Europe/Paris")) == "valid")
        #expect(
            reason(ScheduleSpec(name: "z", cron: "0 * * * *", workflowType: "w", timeZone: "Mars/Olympus")).contains(
                "unknown time zone 'Mars/Olympus'"))
        #expect(reason(ScheduleSpec(name: "b", cron: "0 * * * *", every: 60, workflowType: "w")).contains("exactly one of"))
        #expect(reason(ScheduleSpec(name: "n", workflowType: "w")).contains("exactly one of"))
        #expect(
            reason(ScheduleSpec(name: "t", every: 60, workflowType: "w", idTemplate: "fixed")).contains("must contain {time}"))
        #expect(reason(ScheduleSpec(name: "s", every: 0.5, workflowType: "w")).contains("at least 1 second"))
        #expect(reason(ScheduleSpec(name: "bad name!", every: 60, workflowType: "w")).contains("schedule name 'bad name!'"))
        #expect(reason(ScheduleSpec(name: "never", cron: "0 0 30 2 *", workflowType: "w")).contains("never fires"))
    }

    @Test func durationsAreWrittenTheGoWay() {
        #expect(DurationText.seconds("15m") == 900)
        #expect(DurationText.seconds("1h30m") == 5400)
        #expect(DurationText.seconds("7d") == 604_800)
        #expect(DurationText.seconds("1.5s") == 1.5)
        #expect(DurationText.seconds("15x") == nil)
        #expect(DurationText.seconds("m") == nil)
    }
}
