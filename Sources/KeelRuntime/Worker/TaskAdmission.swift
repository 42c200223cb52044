import Foundation
import KeelAMQP
import KeelCore
import Synchronization

/// Decides, without I/O, what a worker does with a delivered task; the worker carries out the
/// decision. The rules are docs/protocol.md's steps 0 and 0b:
///
/// - a message that is not a task this worker can read is dead-lettered;
/// - a task for an activity this worker does not have is failed at once (the workflow learns
///   without waiting for a timeout) and dead-lettered;
/// - a task RabbitMQ delivered again is never run: an earlier delivery went unacknowledged, so a
///   worker may have run it and died; it is reported, and the coordinator decides;
/// - a copy the coordinator republished, a task that spends a budget (an LLM call), a task
///   from an older coordinator epoch than one seen before, and any task that comes before a
///   coordinator told this worker its epoch, run only once their claim is granted: the
///   coordinator refuses it if another worker started the attempt or the run or activity ended
///   while the task waited in RabbitMQ;
/// - anything else runs.
struct TaskAdmission: Sendable {
    let activities: Set<String>
    var limits = MessageLimits()
    /// The latest coordinator epoch seen on a task, an announcement or a claim's answer: an older
    /// one is claimed before it runs.
    let epochs = EpochWatermark()

    enum Decision: Sendable, Hashable {
        case deadLetter(reason: String)
        case failUnknownActivity(ActivityTask, Failure)
        case reportRedelivered(ActivityTask)
        case claim(ActivityTask)
        case run(ActivityTask)
    }

    func decide(_ message: AMQPDelivery) -> Decision {
        let task: ActivityTask
        do {
            try limits.checkEnvelope(message, bodyLimit: limits.jobBody, what: "task")
            task = try ActivityTask(wireBody: message.body)
            try limits.check(task)
        } catch {
            return .deadLetter(reason: Failure(error).description)
        }
        guard activities.contains(task.activityType) else {
            let error = UnknownTypeError(kind: "activity", name: task.activityType, known: activities.sorted())
            return .failUnknownActivity(task, Failure(error))
        }
        if message.redelivered { return .reportRedelivered(task) }
        // An older epoch, or none said by a coordinator yet: this may be the first copy of a task
        // whose coordinator stopped after publishing it, while its successor publishes another.
        let unvouched = epochs.mustClaim(task.coordinatorEpoch)
        if task.republished == true || task.claimBeforeRunning == true || unvouched { return .claim(task) }
        return .run(task)
    }

    /// The coordinator's answer to a claim; `none` when the worker stopped before one came.
    enum ClaimAnswer: Sendable { case granted, refused, none }

    enum AfterClaim: Sendable, Hashable {
        case run
        /// Another copy of the attempt started: acknowledge this one and drop it.
        case drop
        /// No answer: leave the delivery unacknowledged, so RabbitMQ delivers it again.
        case leave
    }

    static func afterClaim(_ answer: ClaimAnswer) -> AfterClaim {
        switch answer {
        case .granted: .run
        case .refused: .drop
        case .none: .leave
        }
    }
}
