import Foundation
import Synchronization

/// The children this process started and has not seen end, killed (SIGKILL) when it exits. Tests
/// stop their processes on a detached thread (blocking the cooperative pool stalls other tests),
/// and a test process that exits right after its last test ended that thread first: the
/// coordinators and workers of that test ran on for good, holding broker connections.
///
/// A process that asks for it (``cleanUpOnStopSignal(_:)``, `keel bench`) also kills them when it
/// is told to stop: on SIGINT (Ctrl-C), SIGTERM or SIGHUP it kills its children, runs its
/// clean-ups and exits with status 128 + the signal. Foundation starts each child in a process
/// group of its own, so a terminal's Ctrl-C reaches only this process, and a signal's default
/// action skips the `atexit` handlers: `keel bench` stopped that way left its coordinator and
/// worker running. A signal that already has a handler, or that the process started out
/// ignoring (SIGINT in a job started in the background), is left as it is.
enum ChildrenKilledAtExit {
    /// Each child's start time (field 22 of `/proc/PID/stat`), so that a pid the kernel has given
    /// to another process since is not killed.
    private static let children = Mutex<[pid_t: String]>([:])
    private static let installed: Void = {
        atexit { ChildrenKilledAtExit.killAll() }
    }()
    /// Not in every process that starts children (a test process): until libdispatch has put
    /// its own handler in place of the SIG_IGN these start with, about 2 ms, a child started on
    /// another thread would inherit the ignored signals.
    fileprivate static let signalsTaken: Void = {
        _ = installed
        stopping = [SIGINT, SIGTERM, SIGHUP].compactMap(killAllOnSignal)
        // Children started from here on get the default actions (a handler is reset on exec).
        let deadline = Date().addingTimeInterval(1)
        while stopping.contains(where: { isIgnored(Int32($0.handle)) }), Date() < deadline { usleep(1000) }
    }()
    /// What runs on a stop signal once the children are killed (``cleanUpOnStopSignal(_:)``).
    fileprivate static let cleanUps = Mutex<[Int: @Sendable () -> Void]>([:])
    fileprivate static let lastCleanUp = Atomic<Int>(0)
    /// The signal sources, kept for the life of the process.
    nonisolated(unsafe) private static var stopping: [any DispatchSourceSignal] = []

    /// Whether this process ignores `signal` (SIG_IGN).
    static func isIgnored(_ signal: Int32) -> Bool {
        var action = sigaction()
        sigaction(signal, nil, &action)
        return unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == 1
    }

    /// Kills the children and exits on `signal`, unless something else handles or ignores it.
    private static func killAllOnSignal(_ signal: Int32) -> (any DispatchSourceSignal)? {
        let previous = Foundation.signal(signal, SIG_IGN)
        guard previous == nil else {
            // Not the default action (SIG_DFL): put it back.
            Foundation.signal(signal, previous)
            return nil
        }
        let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
        source.setEventHandler {
            killAll()
            for cleanUp in cleanUps.withLock({ Array($0.values) }) { cleanUp() }
            exit(128 + signal)
        }
        source.resume()
        return source
    }

    static func watch(_ pid: pid_t) {
        _ = installed
        guard let started = startTime(of: pid) else { return }
        children.withLock { $0[pid] = started }
    }

    static func forget(_ pid: pid_t) {
        _ = children.withLock { $0.removeValue(forKey: pid) }
    }

    private static func killAll() { kill(children.withLock { $0 }) }

    /// Kills each of `children` still running with the start time given.
    static func kill(_ children: [pid_t: String]) {
        for (pid, started) in children where startTime(of: pid) == started {
            Foundation.kill(pid, SIGKILL)
        }
    }

    static func startTime(of pid: pid_t) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After the command's closing parenthesis: state is field 3, start time field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}

/// Runs `cleanUp` if this process is stopped by SIGINT, SIGTERM or SIGHUP, after its children
/// are killed (``ChildrenKilledAtExit``): what a bench leaves on the broker and on disk. The first
/// call takes those signals over; call it before starting children. Returns the token for
/// ``cancelCleanUpOnStopSignal(_:)``.
public func cleanUpOnStopSignal(_ cleanUp: @escaping @Sendable () -> Void) -> Int {
    _ = ChildrenKilledAtExit.signalsTaken
    let token = ChildrenKilledAtExit.lastCleanUp.add(1, ordering: .relaxed).newValue
    ChildrenKilledAtExit.cleanUps.withLock { $0[token] = cleanUp }
    return token
}

/// Drops a clean-up of ``cleanUpOnStopSignal(_:)`` (its owner cleaned up itself).
public func cancelCleanUpOnStopSignal(_ token: Int) {
    _ = ChildrenKilledAtExit.cleanUps.withLock { $0.removeValue(forKey: token) }
}
