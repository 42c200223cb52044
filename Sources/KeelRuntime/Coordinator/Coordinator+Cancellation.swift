import Foundation
import KeelCore

// Stopping attempts that run for nothing: their run closed, their workflow cancelled them, they
// timed out. Workers hear it on `keel.control`, or in answer to their next heartbeat.
extension Coordinator {
    /// Asks whichever worker may run the activity's current attempt to stop it.
    func stopRunning(_ activity: ActivityRecord, reason: String, _ work: inout Work) {
        guard activity.state == .scheduled || activity.state == .started else { return }
        work.cancels.append(
            ActivityCancel(runId: activity.runId, activityId: activity.activityId, attempt: activity.attempt, reason: reason))
    }

    /// A heartbeat of an attempt that is no longer current (its run closed, it timed out, it was
    /// cancelled): the worker missed the cancel, or it was lost; it hears it again.
    func answerStaleHeartbeat(_ message: ActivityHeartbeat, _ work: inout Work) {
        let reason: String
        if let activity = runs[message.runId]?.activities[message.activityId] {
            guard activity.attempt > message.attempt else { return }
            reason = "attempt \(message.attempt) is over (attempt \(activity.attempt) is current)"
        } else {
            reason = runs[message.runId] == nil ? "its run is closed" : "its activity has ended"
        }
        work.cancels.append(
            ActivityCancel(runId: message.runId, activityId: message.activityId, attempt: message.attempt, reason: reason))
    }
}
