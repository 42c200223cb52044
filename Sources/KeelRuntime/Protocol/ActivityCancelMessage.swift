import Foundation
import KeelAMQP
import KeelCore

/// The coordinator's word to whichever worker runs an attempt: stop it. Sent to every worker on
/// `keel.control` (a fanout exchange) when the attempt's run closes (cancelled, terminated,
/// timed out, failed), its workflow cancels the activity, or the attempt times out; and again in
/// answer to a heartbeat of such an attempt, for a worker that missed the first.
public struct ActivityCancel: Codable, Sendable, Hashable {
    public var runId: String
    public var activityId: Int64
    public var attempt: Int
    /// Why, for the worker's log.
    public var reason: String

    public init(runId: String, activityId: Int64, attempt: Int, reason: String) {
        self.runId = runId
        self.activityId = activityId
        self.attempt = attempt
        self.reason = reason
    }

    public var attemptKey: String { ActivityTask.attemptKey(runId: runId, activityId: activityId, attempt: attempt) }

    func message(topology: Topology) throws -> AMQPMessage {
        AMQPMessage(
            exchange: topology.controlExchange, routingKey: "", body: try Wire.encode(self),
            type: WireType.cancelActivity.rawValue,
            headers: ["keel-type": WireType.cancelActivity.rawValue, "keel-version": wireVersion], persistent: false)
    }
}
