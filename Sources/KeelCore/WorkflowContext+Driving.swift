import Foundation
import Logging

// Driving the workflow from history events (called by WorkflowInstance).
extension WorkflowContext {
    func finish(_ command: Command) {
        guard outcome == nil, nondeterminism == nil, !evicted else { return }
        do {
            try issue(command)
            outcome = command
        } catch {
            // The divergence is recorded in `nondeterminism`.
        }
    }

    func resolveActivity(_ event: HistoryEvent) {
        guard let ref = event.ref, let pending = pendingActivities.removeValue(forKey: ref) else { return }
        if event.kind == .activityCompleted {
            pending.continuation.resume(returning: event.payload ?? .null)
        } else {
            let failure = event.failure ?? Failure(type: "Unknown", message: "activity failed")
            pending.continuation.resume(
                throwing: ActivityFailedError(activityType: pending.type, attempts: event.attempt ?? 1, cause: failure))
        }
    }

    func fireTimer(_ seq: Int64) {
        if let continuation = pendingTimers.removeValue(forKey: seq) {
            continuation.resume()
        } else if let index = conditions.firstIndex(where: { $0.timerSeq == seq }) {
            conditions.remove(at: index).continuation.resume(returning: false)
        }
    }

    func resolveChild(_ event: HistoryEvent) {
        guard let ref = event.ref, let pending = pendingChildren.removeValue(forKey: ref) else { return }
        if event.kind == .childWorkflowCompleted {
            pending.continuation.resume(returning: event.payload ?? .null)
        } else {
            pending.continuation.resume(
                throwing: ChildWorkflowFailedError(
                    workflowType: pending.type, workflowId: pending.workflowId,
                    cause: event.failure ?? Failure(type: "Unknown", message: "child failed")))
        }
    }

    /// Cancellation: every pending await throws ``CancelledError``; activities and timers get
    /// cancel commands. Later awaits work normally, so the workflow can compensate.
    func requestCancellation() {
        guard !cancelRequested else { return }
        cancelRequested = true
        for seq in pendingActivities.keys.sorted() {
            _ = try? issue(.cancelActivity(seq: seq))
            pendingActivities.removeValue(forKey: seq)?.continuation.resume(throwing: CancelledError())
        }
        for seq in pendingTimers.keys.sorted() {
            _ = try? issue(.cancelTimer(seq: seq))
            pendingTimers.removeValue(forKey: seq)?.resume(throwing: CancelledError())
        }
        let waits = conditions
        conditions.removeAll()
        for wait in waits {
            if let timerSeq = wait.timerSeq { _ = try? issue(.cancelTimer(seq: timerSeq)) }
            wait.continuation.resume(throwing: CancelledError())
        }
        for seq in pendingChildren.keys.sorted() {
            pendingChildren.removeValue(forKey: seq)?.continuation.resume(throwing: CancelledError())
        }
    }

    /// Resumes the first satisfied condition; returns whether one was.
    func resumeSatisfiedCondition() -> Bool {
        guard nondeterminism == nil, !evicted,
            let index = conditions.firstIndex(where: { $0.predicate() })
        else { return false }
        let wait = conditions.remove(at: index)
        if let timerSeq = wait.timerSeq {
            _ = try? issue(.cancelTimer(seq: timerSeq))
        }
        wait.continuation.resume(returning: true)
        return true
    }

    /// Fails every pending await so the workflow's tasks finish and can be released.
    func evict() {
        evicted = true
        for (_, pending) in pendingActivities { pending.continuation.resume(throwing: WorkflowEvictedError()) }
        for (_, continuation) in pendingTimers { continuation.resume(throwing: WorkflowEvictedError()) }
        for (_, pending) in pendingChildren { pending.continuation.resume(throwing: WorkflowEvictedError()) }
        for wait in conditions { wait.continuation.resume(throwing: WorkflowEvictedError()) }
        pendingActivities.removeAll()
        pendingTimers.removeAll()
        pendingChildren.removeAll()
        conditions.removeAll()
    }
}
