import Foundation

/// Runs blocking `body` (rabbitmq-c calls, a child process, a broker starting) on a thread of its
/// own and returns its result. Swift's cooperative pool has one thread per core, two here: a
/// task blocked on it for long stalls every other task of the process.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
