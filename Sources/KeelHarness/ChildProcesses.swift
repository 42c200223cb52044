import Foundation
import KeelAMQP

/// Runs a program to the end; returns its exit status and its output and errors together.
public func runToEnd(
    _ executable: URL, _ arguments: [String], environment: [String: String], directory: URL? = nil
) throws -> (status: Int32, output: String) {
    let process = Process()
    let pipe = Pipe()
    process.executableURL = executable
    process.arguments = arguments
    process.currentDirectoryURL = directory
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.standardOutput = pipe
    process.standardError = pipe
    try startWithSignalsUnblocked(process)
    let output = readToEnd(pipe.fileHandleForReading)
    while process.isRunning { Thread.sleep(forTimeInterval: 0.01) }  // not waitUntilExit: see KeelProcess
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// ``runToEnd(_:_:environment:directory:)`` on a thread of its own, for async tests.
public func runToEnd(
    _ executable: URL, _ arguments: [String], environment: [String: String], directory: URL? = nil
) async throws -> (status: Int32, output: String) {
    try await offPool { try runToEnd(executable, arguments, environment: environment, directory: directory) }
}
