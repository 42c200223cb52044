import Foundation
import Keel

/// Renders a history as lines a person reads: time since start, what happened, attempt, worker,
/// how long the attempt took, and the error.
struct Timeline {
    let lines: [String]

    init(_ events: [HistoryEvent]) {
        let start = events.first?.time ?? Date()
        var activityTypes: [Int64: String] = [:]
        var started: [Int64: (time: Date, worker: String)] = [:]
        var lines: [String] = []
        for event in events {
            var text =
                String(format: "%9.3fs  #%-4d ", event.time.timeIntervalSince(start), event.id)
                + event.kind.rawValue.padding(24)
            if let ref = event.ref {
                if event.kind == .activityScheduled, let name = event.name { activityTypes[ref] = name }
                text += "seq \(ref) " + (activityTypes[ref] ?? event.name ?? "")
            } else if let name = event.name {
                text += name
            }
            if let attempt = event.attempt { text += "  attempt \(attempt)" }
            if event.kind == .activityStarted, let ref = event.ref {
                let attributes = ActivityStartedAttributes.of(event)
                started[ref] = (attributes?.began(at: event.time) ?? event.time, event.name ?? "?")
                text += "  on \(event.name ?? "?")"
                if let waited = attributes?.capacityWaitSeconds {
                    text += String(format: "  after %.3fs waiting for capacity", waited)
                }
                if let ran = attributes?.ranSeconds {
                    text += String(format: "  (reported with its result: began %.3fs earlier)", ran)
                }
            }
            if [.activityCompleted, .activityFailed, .activityTimedOut, .activityParked].contains(event.kind),
                let ref = event.ref,
                let begin = started[ref]
            {
                text += String(format: "  %.3fs on %@", event.time.timeIntervalSince(begin.time), begin.worker)
            }
            if let failure = event.failure {
                text += "  \(failure.type): \(failure.message)"
                if let state = failure.retryState { text += " [\(state.rawValue)]" }
                if let next = failure.nextAttemptAt {
                    text += String(format: " next attempt in %.1fs", next.timeIntervalSince(event.time))
                }
            }
            lines.append(text)
        }
        self.lines = lines
    }
}
