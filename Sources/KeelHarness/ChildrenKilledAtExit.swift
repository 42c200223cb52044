import Foundation
import Synchronization

/// The children this process started and has not seen end, killed (SIGKILL) when it exits. Tests
/// stop their processes on a detached thread (blocking the cooperative pool stalls other tests),
/// and a test process that exits right after its last test ended that thread first: the
/// coordinators and workers of that test ran on for good, holding broker connections.
///
/// A process that asks for it (``cleanUpOnStopSignal(_:)``, `keel bench`) also kills them when it
/// is told to stop: on SIGINT (Ctrl-C), SIGTERM or SIGHUP it kills its children, runs its
/// clean-ups (for ``cleanUpGrace`` at most) and exits with status 128 + the signal, also when
/// another thread exits meanwhile (its work fails once the children are gone): that exit waits.
/// Foundation starts each child in a process group of its own, so a terminal's Ctrl-C reaches
/// only this process, and a signal's default action skips the `atexit` handlers: `keel bench`
/// stopped that way left its coordinator and worker running. A signal that already has a
/// handler, or that the process started out ignoring (SIGINT in a job started in the
/// background), is left as it is.
enum ChildrenKilledAtExit {
    /// Each child's start time (field 22 of `/proc/PID/stat`), so that a pid the kernel has given
    /// to another process since is not killed.
    private static let children = Mutex<[pid_t: String]>([:])
    private static let installed: Void = {
        atexit {
            ChildrenKilledAtExit.killAll()
            // A stop signal is being handled: the thread that took it runs the clean-ups and
            // ends the process with 128 + the signal. Another thread's exit must not end it
            // first. Killing the children and deleting the namespace makes the bench's own work
            // fail, and its error exit (status 1) won that race in one CI run.
            if ChildrenKilledAtExit.stopping.load(ordering: .acquiring) {
                while true { pause() }
            }
        }
    }()
    /// Set by the thread that took a stop signal before it kills anything.
    private static let stopping = Atomic<Bool>(false)
    /// Opt-in (``cleanUpOnStopSignal(_:)``), not in every process that starts children: a test
    /// process keeps the signal actions it was given.
    ///
    /// A handler of our own writes the signal's number to a pipe, and a thread of ours reads it
    /// and stops the process. A libdispatch signal source did this before: it needed SIG_IGN in
    /// place until libdispatch installed its own handler (a child started meanwhile inherited the
    /// ignore), and in one full test suite a bench sent SIGINT ran on, with its coordinator and
    /// worker, for a reason not found. A plain handler runs on whichever thread the signal lands
    /// on, and a child resets it to the default action when it runs its program.
    fileprivate static let signalsTaken: Void = {
        _ = installed
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return }
        // Not inherited by the children.
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        stopPipe = ends[1]
        let readEnd = ends[0]
        let reader = Thread {
            var signal: UInt8 = 0
            // Retried only when interrupted; another error (the pipe cannot fail so while the
            // process holds both ends) ends the thread instead of spinning.
            while true {
                let count = read(readEnd, &signal, 1)
                if count == 1 { break }
                guard count < 0, errno == EINTR else { return }
            }
            stopping.store(true, ordering: .releasing)
            killAll()
            // The clean-ups get a few seconds (one that talks to a broker that is gone or slow
            // would otherwise keep a stopped process alive), then the process ends without the
            // `atexit` handlers: an exit that waits on a lock another thread holds would be a
            // process that does not stop. Children started meanwhile (the process's other
            // threads run on) are killed here instead of by the handler.
            let cleaned = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                for cleanUp in cleanUps.withLock({ Array($0.clean.values) }) { cleanUp() }
                cleaned.signal()
            }
            _ = cleaned.wait(timeout: .now() + cleanUpGrace)
            killAll()
            fflush(nil)
            _exit(128 + Int32(signal))
        }
        reader.name = "keel.stop-signals"
        reader.start()
        for signal in [SIGINT, SIGTERM, SIGHUP] where hasDefaultAction(signal) {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                // Async-signal-safe: one write(2) of one byte.
                var number = UInt8(truncatingIfNeeded: signal)
                _ = write(ChildrenKilledAtExit.stopPipe, &number, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
    }()
    /// How long a stop signal waits for the clean-ups before the process ends anyway, seconds.
    static let cleanUpGrace = 5.0
    /// What runs on a stop signal once the children are killed (``cleanUpOnStopSignal(_:)``), by
    /// token, and the last token given.
    fileprivate static let cleanUps = Mutex((clean: [Int: @Sendable () -> Void](), lastToken: 0))
    /// The pipe's end the signal handler writes to (set once, before any handler is installed).
    nonisolated(unsafe) private static var stopPipe: Int32 = -1

    /// Whether this process ignores `signal` (SIG_IGN).
    static func isIgnored(_ signal: Int32) -> Bool { handler(of: signal) == 1 }

    /// Whether `signal` has its default action (SIG_DFL): neither ignored nor handled.
    private static func hasDefaultAction(_ signal: Int32) -> Bool { handler(of: signal) == 0 }

    private static func handler(of signal: Int32) -> Int {
        var action = sigaction()
        sigaction(signal, nil, &action)
        return unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self)
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
        guard let fields = processStatFields(of: pid), fields.count > 19 else { return nil }
        return String(fields[19])
    }
}

/// Runs `cleanUp` if this process is stopped by SIGINT, SIGTERM or SIGHUP, after its children
/// are killed (``ChildrenKilledAtExit``): what a bench leaves on the broker and on disk. The first
/// call takes those signals over; call it before starting children. Returns the token for
/// ``cancelCleanUpOnStopSignal(_:)``.
public func cleanUpOnStopSignal(_ cleanUp: @escaping @Sendable () -> Void) -> Int {
    _ = ChildrenKilledAtExit.signalsTaken
    return ChildrenKilledAtExit.cleanUps.withLock { cleanUps in
        cleanUps.lastToken += 1
        cleanUps.clean[cleanUps.lastToken] = cleanUp
        return cleanUps.lastToken
    }
}

/// Drops a clean-up of ``cleanUpOnStopSignal(_:)`` (its owner cleaned up itself).
public func cancelCleanUpOnStopSignal(_ token: Int) {
    _ = ChildrenKilledAtExit.cleanUps.withLock { $0.clean.removeValue(forKey: token) }
}
