import Foundation
import Logging

// Signals and queries.
extension WorkflowContext {
    /// Handles signal `name`. Signals that arrived before the handler was set are delivered now,
    /// in arrival order.
    public func onSignal<T: Decodable>(_ name: String, as type: T.Type, _ handler: @escaping (T) -> Void) {
        signalHandlers[name] = { payload in
            handler(try payload.decode(T.self, field: "signal \(name)"))
        }
        let waiting = bufferedSignals.filter { $0.name == name }
        bufferedSignals.removeAll { $0.name == name }
        for signal in waiting { deliverSignal(name: signal.name, payload: signal.payload) }
    }

    /// Handles signal `name`, which carries no value.
    public func onSignal(_ name: String, _ handler: @escaping () -> Void) {
        onSignal(name, as: JSONValue.self) { _ in handler() }
    }

    /// Answers query `name`. Query handlers read state; they cannot await or issue commands.
    public func onQuery<R: Encodable>(_ name: String, _ handler: @escaping () throws -> R) {
        queryHandlers[name] = { [payloadLimit] _ in
            try Payload(encoding: try handler(), field: "result of query \(name)", limit: payloadLimit)
        }
    }

    /// Answers query `name`, which takes an argument.
    public func onQuery<A: Decodable, R: Encodable>(
        _ name: String, argument: A.Type, _ handler: @escaping (A) throws -> R
    ) {
        queryHandlers[name] = { [payloadLimit] payload in
            let argument = try (payload ?? .null).decode(A.self, field: "argument of query \(name)")
            return try Payload(encoding: try handler(argument), field: "result of query \(name)", limit: payloadLimit)
        }
    }

    func deliverSignal(name: String, payload: Payload) {
        guard let handler = signalHandlers[name] else {
            bufferedSignals.append((name, payload))
            return
        }
        do {
            try handler(payload)
        } catch {
            // The signal stays in history as evidence; the workflow keeps running.
            if !replaying {
                logger.warning("signal \(name) was rejected: \(error)")
            }
        }
    }
}
