import Foundation
import Testing

@testable import KeelHarness

/// Children the harness starts take signals, whichever thread starts them, and do not outlive
/// the process that started them.
@Suite("Child processes")
struct ChildProcessTests {
    /// `sleep 60` as a child, with what removes its directory and kills it.
    static func sleeper() throws -> (child: KeelProcess, cleanUp: () -> Void) {
        let directory = makeTemporaryDirectory("keel-child")
        let child = try KeelProcess(
            ["sleep", "60"], environment: [:], log: directory.appendingPathComponent("sleep.log"),
            binary: URL(fileURLWithPath: "/usr/bin/env"))
        let pid = child.process.processIdentifier
        return (
            child,
            {
                kill(pid, SIGKILL)
                try? FileManager.default.removeItem(at: directory)
            }
        )
    }

    /// Swift's pool threads block every asynchronous signal, and a child inherits its starter's
    /// mask: Python workers started by tests never took SIGTERM, ran on after their tests and
    /// outlived the test process.
    @Test func aChildStartedFromSwiftsPoolEndsOnSIGTERM() async throws {
        let (child, cleanUp) = try Self.sleeper()
        defer { cleanUp() }
        kill(child.process.processIdentifier, SIGTERM)
        #expect(await eventually(5) { !child.exists }, "sleep (no handler of its own) ends on SIGTERM")
    }

    /// What the test process kills when it exits: its children still running, not a process that
    /// took the pid of one since.
    @Test func aChildIsKilledAtExitOnlyUnderItsOwnStartTime() async throws {
        let (child, cleanUp) = try Self.sleeper()
        defer { cleanUp() }
        let pid = child.process.processIdentifier
        let started = try #require(ChildrenKilledAtExit.startTime(of: pid))
        ChildrenKilledAtExit.kill([pid: started + "0"])
        try await Task.sleep(for: .milliseconds(200))
        #expect(child.exists, "another start time: another process under a reused pid")
        ChildrenKilledAtExit.kill([pid: started])
        #expect(await eventually(5) { !child.exists })
    }
}
