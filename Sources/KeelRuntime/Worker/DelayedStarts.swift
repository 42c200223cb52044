import Foundation
import Synchronization

/// Reports the starts of the activities that outlive the start-report delay, from one loop per
/// worker: a sleeping task per activity (a task, a timer and its cancel for every step, most of
/// which end well before the delay) was 8-10 % of a worker's CPU in `bench throughput`. The loop
/// sleeps until the earliest start falls due, and while none is pending until one is scheduled:
/// a loop that looked every 50 ms woke threads the steps needed and cost `bench latency` a
/// millisecond at p99.
final class DelayedStarts: Sendable {
    private struct State {
        var next = 0
        var due: [Int: (at: ContinuousClock.Instant, report: @Sendable () -> Void)] = [:]
        /// The loop, while it waits for something to be scheduled.
        var parked: CheckedContinuation<Void, Never>?
        var stopped = false
    }

    private let delay: Duration
    private let state = Mutex(State())

    init(delay: Duration) { self.delay = delay }

    /// Calls `report` once the delay has passed, unless ``cancel(_:)`` comes first; returns the
    /// token for that.
    func schedule(_ report: @escaping @Sendable () -> Void) -> Int {
        let at = ContinuousClock.now + delay
        let (token, parked) = state.withLock { state in
            state.next += 1
            state.due[state.next] = (at, report)
            defer { state.parked = nil }
            return (state.next, state.parked)
        }
        parked?.resume()
        return token
    }

    func cancel(_ token: Int) {
        _ = state.withLock { $0.due.removeValue(forKey: token) }
    }

    /// Reports what falls due until the task is cancelled.
    func run() async {
        await withTaskCancellationHandler {
            while !Task.isCancelled {
                let now = ContinuousClock.now
                let (reports, earliest) = state.withLock { state in
                    let tokens = state.due.filter { $0.value.at <= now }.map(\.key)
                    let reports = tokens.compactMap { state.due.removeValue(forKey: $0)?.report }
                    return (reports, state.due.values.map(\.at).min())
                }
                for report in reports { report() }
                if let earliest {
                    try? await Task.sleep(until: earliest, clock: .continuous)
                } else {
                    await parkUntilScheduled()
                }
            }
        } onCancel: {
            let parked = state.withLock { state in
                state.stopped = true
                defer { state.parked = nil }
                return state.parked
            }
            parked?.resume()
        }
    }

    private func parkUntilScheduled() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let parked = state.withLock { state -> Bool in
                guard state.due.isEmpty, !state.stopped else { return false }
                state.parked = continuation
                return true
            }
            if !parked { continuation.resume() }
        }
    }
}
