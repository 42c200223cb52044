import Foundation
import Logging

// Side effects, circuit gates and versioning: values recorded once in history and replayed.
extension WorkflowContext {
    /// Runs `body` once and records its result; replay returns the recorded value.
    /// For small nondeterministic values (a timestamp from outside, a generated id).
    public func sideEffect<T: Codable>(_ body: () throws -> T) throws -> T {
        try recorded(marker: "sideEffect", body)
    }

    /// Asks the coordinator's circuit breakers whether calls to `providers` may go out, and
    /// records the question and the answer: replay returns the recorded gate and evaluates
    /// neither `providers` (which may come from configuration) nor live breaker state.
    public func circuitGate(for providers: () -> [String]) throws -> CircuitGate {
        try recorded(marker: "circuitBreakers") {
            let names = providers()
            // Asked, not taken: the coordinator registers a probe when it sends the call.
            let breakers = environment.breakers
            let now = Date()
            return CircuitGate(
                providers: names,
                decisions: names.map { name in
                    guard breakers.wouldAdmit(name, now: now) else { return .reject }
                    return breakers.state(of: name) == .closed ? .allow : .probe
                })
        }
    }

    /// The breakers' states for `providers` (for reporting; deciding is ``circuitGate(for:)``),
    /// recorded in history like the gate.
    public func circuitStates(for providers: () -> [String]) throws -> [String: CircuitState] {
        try recorded(marker: "circuitStates") {
            Dictionary(providers().map { ($0, environment.breakers.state(of: $0)) }, uniquingKeysWith: { first, _ in first })
        }
    }

    /// Runs `body` once and records its value in a marker named `marker`; replay returns it.
    func recorded<T: Codable>(marker: String, _ body: () throws -> T) throws -> T {
        try checkUsable()
        let seq = nextSeq()
        if replaying {
            let recorded = try issue(.recordMarker(seq: seq, name: marker, value: nil))
            return try (recorded?.payload ?? .null).decode(T.self, field: "\(marker) marker")
        }
        let value = try body()
        let payload = try Payload(encoding: value, field: "\(marker) marker", limit: payloadLimit)
        try issue(.recordMarker(seq: seq, name: marker, value: payload))
        return value
    }

    /// Versioning for running workflows: returns true for runs that reached this point with
    /// the new code, false for runs whose history was made by code without the change.
    ///
    /// ```swift
    /// if context.patched("add-moderation") {
    ///     try await context.execute(Moderate.self, input: text, options: options)
    /// }
    /// ```
    public func patched(_ changeId: String) throws -> Bool {
        try checkUsable()
        if let known = patches[changeId] { return known }
        let name = "patch:" + changeId
        let result: Bool
        if replaying {
            if replayCursor < replayCommands.count,
                replayCommands[replayCursor].kind == .markerRecorded,
                replayCommands[replayCursor].name == name
            {
                try issue(.recordMarker(seq: nextSeq(), name: name, value: nil))
                result = true
            } else {
                result = false
            }
        } else {
            try issue(.recordMarker(seq: nextSeq(), name: name, value: nil))
            result = true
        }
        patches[changeId] = result
        return result
    }
}
