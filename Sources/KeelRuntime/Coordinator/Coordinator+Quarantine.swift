import Foundation
import KeelCore
import Logging

// Crash quarantine: a run whose workflow code crashed the coordinator twice in a row is blocked (docs/operations.md).
extension Coordinator {
    /// The failure type of a run quarantined because its workflow code crashed the coordinator.
    static let crashedType = "WorkflowCodeCrashed"

    /// Runs `body`, workflow code of `run`, with the crash marker naming the run.
    func guarded<T>(_ run: LiveRun, _ body: () throws -> T) rethrows -> T {
        guard let marker else { return try body() }
        return try marker.around(workflowId: run.record.workflowId, runId: run.runId, lastEventId: run.nextEventId - 1, body)
    }

    /// Why `workflowId` must not be run: its code crashed the coordinator in two consecutive
    /// processes. Nil for every other workflow.
    func quarantine(workflowId: String) -> Failure? {
        guard isQuarantined(workflowId), let crash = lastCrash else { return nil }
        metrics.quarantined()
        struct Details: Encodable {
            var signal: Int32
            var lastEventId: Int64
            var crashes: Int32
        }
        return Failure(
            type: Self.crashedType,
            message:
                "the workflow code crashed the coordinator \(crash.count == 2 ? "twice" : "\(crash.count) times") in a row while processing this run: "
                + "\(CrashMarker.describe(signal: crash.signal)), after event \(crash.lastEventId). The run is quarantined; "
                + "fix the code, deploy it, then `keel unblock \(workflowId)` replays it",
            nonRetryable: true,
            details: try? Payload(
                encoding: Details(signal: crash.signal, lastEventId: crash.lastEventId, crashes: crash.count), field: "crash"))
    }

    /// Whether `workflowId`'s code crashed the last two coordinators.
    func isQuarantined(_ workflowId: String) -> Bool {
        guard let crash = lastCrash else { return false }
        return crash.count >= 2 && CrashMarker.names(crash, workflowId)
    }

    /// Replays a blocked run with the code this coordinator has and, if its history replays,
    /// lets it run again. One more crash in its code quarantines it again at once. Throws why it
    /// stays blocked (its history still diverges, or it is not blocked).
    public func unblock(workflowId: String) async throws -> RunRecord {
        let run = try openRun(workflowId, for: "unblock")
        guard run.record.status == .blocked else {
            throw NotBlockedError(
                message: "workflow \(workflowId): run \(run.runId) is \(run.record.status.rawValue), not blocked")
        }
        // This process runs the code that crashed the last two: replaying it would crash this
        // one too. (So does an unblock job a crash left unacknowledged, when it comes back.)
        if isQuarantined(workflowId) {
            throw NotBlockedError(
                message:
                    "workflow \(workflowId) stays blocked: its code crashed the last two coordinators, and this one runs the "
                    + "same code; deploy a fix and restart the coordinator, then unblock it")
        }
        let definition = try workflows.definition(named: run.record.workflowType)
        let events = try store.events(runId: run.runId)
        var work = Work(now: clock.now())
        marker?.expectCrash(workflowId: workflowId, runId: run.runId)
        let divergence = resume(run, definition, events, &work)
        try await finish(&work)
        if let divergence {
            throw NotBlockedError(message: "workflow \(workflowId) stays blocked: \(divergence.message)")
        }
        return run.record
    }
}
