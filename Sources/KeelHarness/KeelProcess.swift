import Foundation
import KeelAMQP

/// A child process running a `keel` binary, its output going to a log file.
public final class KeelProcess: @unchecked Sendable {
    public let process = Process()

    /// The `keel` binary next to the running executable (the tests' bundle, or `keel` itself).
    public static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("keel")
    }

    public init(_ arguments: [String], environment: [String: String], log: URL, binary: URL = KeelProcess.binary) throws {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = output
        process.standardError = output
        try startWithSignalsUnblocked(process)
        ChildrenKilledAtExit.watch(process.processIdentifier)
    }

    /// `kill -9`.
    public func kill() {
        // Unconditionally: a test that kills a process must not skip it on a stale `isRunning`.
        Foundation.kill(process.processIdentifier, SIGKILL)
        waitForExit(process, seconds: 10)
        if !processExists(process) { ChildrenKilledAtExit.forget(process.processIdentifier) }
    }

    /// Whether the process still exists, asked of the kernel. A zombie (dead, not yet reaped by
    /// Foundation's monitor, which lags under load) does not count.
    public var exists: Bool { processExists(process) }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    public func terminate() { stopProcess(process) }
}

/// SIGTERM, then SIGKILL if the process is still running after `grace` seconds.
public func stopProcess(_ process: Process, grace: Double = 10) {
    guard processExists(process) else { return }
    process.terminate()
    waitForExit(process, seconds: grace)
    if processExists(process) {
        kill(process.processIdentifier, SIGKILL)
        waitForExit(process, seconds: 10)
    }
    if !processExists(process) { ChildrenKilledAtExit.forget(process.processIdentifier) }
}

/// Whether `process` is alive, asked of the kernel: Foundation's `isRunning` turns false only
/// once its monitor has seen the exit, which lags under load, and a zombie (dead, not yet
/// reaped) is not alive.
func processExists(_ process: Process) -> Bool { processExists(pid: process.processIdentifier) }

/// Whether process `pid` is alive (a zombie is not).
public func processExists(pid: pid_t) -> Bool {
    guard pid > 0, kill(pid, 0) == 0 else { return false }
    guard let state = processStatFields(of: pid)?.first else { return true }
    return state != "Z"
}

/// Polls until `process` has exited, at most `seconds`. Not `waitUntilExit()`: on Linux it can
/// wait forever when called from a thread of the cooperative pool (the exit is noticed on a
/// queue that then gets no thread), which stalled the whole test run; nor `isRunning`, which
/// lags the same way.
private func waitForExit(_ process: Process, seconds: Double) {
    let deadline = Date().addingTimeInterval(seconds)
    while processExists(process) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass. Suspends instead of blocking
/// a thread: tests run in parallel on a small cooperative pool, and a blocked thread there
/// delays every other test's tasks (in-process workers, timers) by seconds.
public func eventually(_ seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
