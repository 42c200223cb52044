import Foundation
import Synchronization

/// The children this process started and has not seen end, killed (SIGKILL) when it exits. Tests
/// stop their processes on a detached thread (blocking the cooperative pool stalls other tests),
/// and a test process that exits right after its last test ended that thread first: the
/// coordinators and workers of that test ran on for good, holding broker connections.
enum ChildrenKilledAtExit {
    /// Each child's start time (field 22 of `/proc/PID/stat`), so that a pid the kernel has given
    /// to another process since is not killed.
    private static let children = Mutex<[pid_t: String]>([:])
    private static let installed: Void = {
        atexit { ChildrenKilledAtExit.killAll() }
    }()

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
