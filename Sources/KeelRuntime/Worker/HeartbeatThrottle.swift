import Foundation
import KeelCore
import Synchronization

/// Sends heartbeats at most once per 0.8 × heartbeat timeout (and at least every 30 s while
/// the activity keeps beating), always with the latest details.
final class HeartbeatThrottle: Sendable {
    private let interval: Double
    private let send: @Sendable (Payload?) async -> Void
    private let state = Mutex((lastSent: Date.distantPast, pending: Payload??.none, flushScheduled: false, finished: false))

    init(task: ActivityTask, send: @escaping @Sendable (Payload?) async -> Void) {
        interval = min((task.heartbeatTimeout ?? 37.5) * 0.8, 30)
        self.send = send
    }

    func beat(_ details: Payload?) {
        let now = Date()
        let action: (sendNow: Bool, scheduleIn: Double?) = state.withLock { state in
            if state.finished { return (false, nil) }
            let wait = interval - now.timeIntervalSince(state.lastSent)
            if wait <= 0 {
                state.lastSent = now
                state.pending = nil
                return (true, nil)
            }
            state.pending = .some(details)
            if state.flushScheduled { return (false, nil) }
            state.flushScheduled = true
            return (false, wait)
        }
        if action.sendNow {
            Task { await send(details) }
        } else if let wait = action.scheduleIn {
            Task {
                try? await Task.sleep(for: .seconds(double: wait))
                let latest: Payload?? = state.withLock { state in
                    state.flushScheduled = false
                    guard !state.finished, let pending = state.pending else { return nil }
                    state.pending = nil
                    state.lastSent = Date()
                    return .some(pending)
                }
                if let latest { await send(latest) }
            }
        }
    }

    func finish() { state.withLock { $0.finished = true } }
}
