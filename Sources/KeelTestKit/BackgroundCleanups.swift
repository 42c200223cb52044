import Dispatch
import Foundation
import Keel

/// A test's clean-ups that block (stopping processes, deleting its namespace on the broker), run
/// on threads of their own: tests start them from a `defer` or a `deinit` on Swift's cooperative
/// pool. The test process waits for those still under way as it exits, 10 s at most, so that the
/// end of a suite does not cut them short and leave a namespace on the broker.
public enum BackgroundCleanups {
    private static let underWay = DispatchGroup()
    private static let installed: Void = {
        atexit { _ = BackgroundCleanups.underWay.wait(timeout: .now() + 10) }
    }()

    /// Runs `cleanup` on a thread of its own.
    public static func run(_ cleanup: @escaping @Sendable () -> Void) {
        _ = installed
        underWay.enter()
        Thread.detachNewThread {
            cleanup()
            underWay.leave()
        }
    }

    /// Deletes `topology`'s namespace once `services` (running in this process) have ended: one
    /// still stopping could declare the namespace again after an earlier removal (a consumer is
    /// told its queue was deleted, and a publisher reconnects and declares).
    static func remove(_ topology: Topology, from url: AMQPURL, after services: [Task<Void, any Error>]) {
        _ = installed
        underWay.enter()
        Task.detached {
            for service in services { _ = await service.result }
            run { topology.remove(from: url) }
            underWay.leave()
        }
    }
}
