import Foundation

/// Calls actions at given instants, from one thread per process, for the deadlines of running
/// attempts: a task group per attempt with a sleeping child for its start-to-close timeout (two
/// tasks, a timer and its cancel for every step, most of which end long before the deadline)
/// cost a worker CPU and a hand-over between threads on every step.
///
/// The thread sleeps until the earliest instant, and is woken only when an earlier one is
/// scheduled; a cancelled alarm is dropped, and the thread finds nothing due when it wakes for it.
/// Actions run on that thread and must not block.
final class Alarms: @unchecked Sendable {
    static let shared = Alarms()

    private struct Alarm {
        var at: ContinuousClock.Instant
        var action: @Sendable () -> Void
    }

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var alarms: [Int: Alarm] = [:]
    private var lastToken = 0
    private var running = false
    /// When the thread wakes by itself (nil: it waits to be signalled, or it is not asleep).
    private var sleepingUntil: ContinuousClock.Instant?
    private var asleep = false

    /// Calls `action` at `instant` (at once if it is past), unless ``cancel(_:)`` comes first;
    /// returns the token for that.
    func schedule(at instant: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> Int {
        condition.lock()
        defer { condition.unlock() }
        lastToken += 1
        alarms[lastToken] = Alarm(at: instant, action: action)
        if !running {
            running = true
            let thread = Thread { [self] in loop() }
            thread.name = "keel.alarms"
            thread.start()
        } else if asleep, sleepingUntil.map({ instant < $0 }) ?? true {
            condition.signal()
        }
        return lastToken
    }

    /// Sleeps for `duration`, whether or not the task is cancelled.
    func sleep(for duration: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            _ = schedule(at: .now + duration) { continuation.resume() }
        }
    }

    /// Drops the alarm if it has not gone off.
    func cancel(_ token: Int) {
        condition.lock()
        alarms.removeValue(forKey: token)
        condition.unlock()
    }

    private func loop() {
        condition.lock()
        while true {
            let now = ContinuousClock.now
            let due = alarms.filter { $0.value.at <= now }
            if !due.isEmpty {
                for token in due.keys { alarms.removeValue(forKey: token) }
                condition.unlock()
                for alarm in due.values { alarm.action() }
                condition.lock()
                continue
            }
            let earliest = alarms.values.lazy.map(\.at).min()
            sleepingUntil = earliest
            asleep = true
            if let earliest {
                _ = condition.wait(until: Date(timeIntervalSinceNow: (earliest - now).seconds))
            } else {
                condition.wait()
            }
            asleep = false
        }
    }
}
