import Foundation

/// The fields of `/proc/PID/stat` after the command's closing parenthesis (a command may hold
/// spaces and parentheses itself), numbered from 0: the state (field 3 in proc(5)) is at 0, the
/// parent's pid at 1, user and system CPU ticks at 11 and 12, the start time at 19. Nil when the
/// process is gone.
public func processStatFields(of pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ")
}
