import Foundation
import Synchronization

/// Reports the starts of the activities that outlive the start-report delay, from one loop per
/// worker: a sleeping task per activity (a task, a timer and its cancel for every step, most of
/// which end well before the delay) was 8-10 % of a worker's CPU in `bench throughput`. The loop
/// looks every fifth of the delay (at most every 50 ms), so a start goes out between the delay
/// and 1.2 times it.
final class DelayedStarts: Sendable {
    private let delay: Duration
    private let tick: Duration
    private let pending = Mutex((next: 0, due: [Int: (at: ContinuousClock.Instant, report: @Sendable () -> Void)]()))

    init(delay: Duration) {
        self.delay = delay
        tick = min(delay / 5, .milliseconds(50))
    }

    /// Calls `report` once the delay has passed, unless ``cancel(_:)`` comes first; returns the
    /// token for that.
    func schedule(_ report: @escaping @Sendable () -> Void) -> Int {
        let at = ContinuousClock.now + delay
        return pending.withLock { pending in
            pending.next += 1
            pending.due[pending.next] = (at, report)
            return pending.next
        }
    }

    func cancel(_ token: Int) {
        _ = pending.withLock { $0.due.removeValue(forKey: token) }
    }

    /// Reports what falls due until the task is cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let now = ContinuousClock.now
            let due = pending.withLock { pending -> [@Sendable () -> Void] in
                let tokens = pending.due.filter { $0.value.at <= now }.map(\.key)
                return tokens.compactMap { pending.due.removeValue(forKey: $0)?.report }
            }
            for report in due { report() }
        }
    }
}
