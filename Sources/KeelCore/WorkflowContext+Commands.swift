import Foundation
import Logging

// Issuing commands: each is checked against history while replaying (non-determinism).
extension WorkflowContext {
    /// Records `command` or, while replaying, checks it against history.
    /// Returns the recorded event when replaying.
    @discardableResult
    func issue(_ command: Command) throws -> HistoryEvent? {
        try checkUsable()
        if replayCursor < replayCommands.count {
            let recorded = replayCommands[replayCursor]
            guard command.matches(recorded) else {
                throw diverged(eventId: recorded.id, recorded: recorded.summary, issued: command.summary)
            }
            replayCursor += 1
            return recorded
        }
        if replaying {
            throw diverged(eventId: nil, recorded: "no further command", issued: command.summary)
        }
        issued.append(command)
        return nil
    }

    func diverged(eventId: Int64?, recorded: String, issued: String) -> NonDeterminismError {
        let error = NonDeterminismError(
            workflowId: info.workflowId, runId: info.runId, eventId: eventId, recorded: recorded,
            issued: issued)
        if nondeterminism == nil { nondeterminism = error }
        return nondeterminism!
    }

    func checkUsable() throws {
        if let nondeterminism { throw nondeterminism }
        if evicted { throw WorkflowEvictedError() }
        if outcome != nil { throw WorkflowEvictedError() }
    }

    func nextSeq() -> Int64 {
        seq += 1
        return seq
    }
}
