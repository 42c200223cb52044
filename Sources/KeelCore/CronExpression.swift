import Foundation

/// A five-field cron expression — minute, hour, day of month, month, day of week — with `*`,
/// lists (`1,15`), ranges (`1-5`), steps (`*/15`, `8-18/2`), month and day names (`jan`, `mon`),
/// and the macros `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. As in Vixie cron, when
/// both the day of month and the day of week are restricted, a day matching either fires.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    let minutes: [Int]
    let hours: [Int]
    let days: Set<Int>
    let months: Set<Int>
    /// 0 is Sunday.
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    private static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"
    ]
    private static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    public init(_ text: String) throws(ScheduleError) {
        description = text
        let expanded = Self.macros[text.trimmingCharacters(in: .whitespaces).lowercased()] ?? text
        let fields = expanded.split(whereSeparator: \.isWhitespace).map(String.init)
        guard fields.count == 5 else {
            throw ScheduleError(
                "invalid cron expression '\(text)': expected 5 fields (minute hour day-of-month month day-of-week), got \(fields.count)"
            )
        }
        func field(
            _ index: Int, _ name: String, _ range: ClosedRange<Int>, names: [String] = [], base: Int = 0
        )
            throws(ScheduleError) -> Set<Int>
        {
            do {
                return try Self.parse(fields[index], range: range, names: names, base: base)
            } catch {
                throw ScheduleError("invalid cron expression '\(text)': \(name) field '\(fields[index])': \(error.message)")
            }
        }
        minutes = try field(0, "minute", 0...59).sorted()
        hours = try field(1, "hour", 0...23).sorted()
        days = try field(2, "day-of-month", 1...31)
        months = try field(3, "month", 1...12, names: Self.monthNames, base: 1)
        // 7 is Sunday too.
        weekdays = Set(try field(4, "day-of-week", 0...7, names: Self.dayNames).map { $0 % 7 })
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
    }

    private static func parse(
        _ field: String, range: ClosedRange<Int>, names: [String], base: Int
    )
        throws(ScheduleError) -> Set<Int>
    {
        func value(_ text: String) throws(ScheduleError) -> Int {
            if let index = names.firstIndex(of: text.lowercased()) { return index + base }
            guard let number = Int(text) else { throw ScheduleError("'\(text)' is not a number") }
            guard range.contains(number) else {
                throw ScheduleError("\(number) is out of range \(range.lowerBound)-\(range.upperBound)")
            }
            return number
        }
        var values: Set<Int> = []
        for part in field.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard pieces.count <= 2, !pieces[0].isEmpty else { throw ScheduleError("'\(part)' is not a value, range or step") }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else {
                    throw ScheduleError("step '\(pieces[1])' is not a positive number")
                }
                step = parsed
            }
            var low: Int
            var high: Int
            if pieces[0] == "*" {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let dash = pieces[0].firstIndex(of: "-") {
                low = try value(String(pieces[0][..<dash]))
                high = try value(String(pieces[0][pieces[0].index(after: dash)...]))
                guard low <= high else { throw ScheduleError("range \(pieces[0]) runs backwards") }
            } else {
                low = try value(pieces[0])
                // `5/15`: from 5 to the end, every 15.
                high = pieces.count == 2 ? range.upperBound : low
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// The first time after `date` that matches, in `timeZone`; nil when none comes within five
    /// years (`0 0 30 2 *`). A local time that a daylight-saving change skips does not fire.
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let firstDay = calendar.startOfDay(for: date)
        for offset in 0..<(366 * 5) {
            guard let day = calendar.date(byAdding: .day, value: offset, to: firstDay) else { return nil }
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            guard let year = parts.year, let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
                months.contains(month), matches(day: dayOfMonth, weekday: weekday - 1)
            else { continue }
            for hour in hours {
                for minute in minutes {
                    let wanted = DateComponents(year: year, month: month, day: dayOfMonth, hour: hour, minute: minute)
                    guard let candidate = calendar.date(from: wanted), candidate > date else { continue }
                    let got = calendar.dateComponents([.day, .hour, .minute], from: candidate)
                    guard got.day == dayOfMonth, got.hour == hour, got.minute == minute else { continue }
                    return candidate
                }
            }
        }
        return nil
    }

    private func matches(day: Int, weekday: Int) -> Bool {
        switch (daysRestricted, weekdaysRestricted) {
        case (true, true): days.contains(day) || weekdays.contains(weekday)
        case (true, false): days.contains(day)
        case (false, true): weekdays.contains(weekday)
        case (false, false): true
        }
    }
}
