import Foundation

/// Encodings of values made recently, by value, at most `limit` (all dropped once full): runs
/// and activities mostly share their options, and encoding them again for every event and
/// every saved record was several per cent of the coordinator's CPU. Safe from any thread.
package final class RecentEncodings<Value: Hashable, Encoded>: @unchecked Sendable {
    private let lock = NSLock()
    // Guarded by `lock`.
    private var encodings: [Value: Encoded] = [:]
    private let limit: Int

    package init(limit: Int = 256) { self.limit = limit }

    /// `value`'s encoding: the one kept, else `encode(value)`, kept for next time.
    package func encoding(of value: Value, _ encode: (Value) throws -> Encoded) rethrows -> Encoded {
        if let known = lock.withLock({ encodings[value] }) { return known }
        let encoded = try encode(value)
        lock.withLock {
            if encodings.count >= limit { encodings.removeAll() }
            encodings[value] = encoded
        }
        return encoded
    }
}
