import Synchronization

/// A one-way switch a service's loops wait on, instead of polling a stop flag: ``trigger()``
/// wakes every ``wait()``, now and later.
final class ShutdownSignal: Sendable {
    private let state = Mutex((triggered: false, waiters: [CheckedContinuation<Void, Never>]()))

    var isTriggered: Bool { state.withLock { $0.triggered } }

    func trigger() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.triggered else { return [] }
            state.triggered = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once triggered.
    func wait() async {
        await withCheckedContinuation { continuation in
            let triggered = state.withLock { state -> Bool in
                if !state.triggered { state.waiters.append(continuation) }
                return state.triggered
            }
            if triggered { continuation.resume() }
        }
    }
}

/// How many things (running activities) are in progress, and a wait for none.
final class InProgress: Sendable {
    private let state = Mutex((count: 0, waiters: [Int: CheckedContinuation<Void, Never>](), next: 0))

    var count: Int { state.withLock { $0.count } }

    func enter() { state.withLock { $0.count += 1 } }

    func leave() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Whether the count reached zero within `limit`.
    func drained(within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.empty()
                return true
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let drained = await group.next() ?? false
            group.cancelAll()
            return drained
        }
    }

    /// Returns when the count is zero, or the task is cancelled.
    private func empty() async {
        let id = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> Bool in
                    if state.count == 0 || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
