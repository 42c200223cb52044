import CCrashMarker
import Foundation

/// A page of a file, mapped into memory, that says which run's workflow code the coordinator
/// is running right now, and which fatal signal ended the process. Stores into a shared
/// mapping survive the process's death in the kernel's page cache, so the next coordinator
/// reads how its predecessor died at no cost per step (no system call while workflow code runs).
///
/// It also keeps the last crash it learnt of (the workflow, and how many consecutive crashes
/// happened while its code ran), which is how a run that crashes the coordinator again and again
/// gets quarantined instead of replayed forever.
final class CrashMarker: @unchecked Sendable {
    /// What the marker said when it was opened: the workflow code that was running when the
    /// previous process died, if any.
    struct Crash: Sendable, Hashable {
        var workflowId: String
        var runId: String
        var lastEventId: Int64
        /// 0 when the process died without a signal it could record (SIGKILL, the OOM killer, a
        /// stack overflow on a thread without an alternate signal stack).
        var signal: Int32
        /// Consecutive crashes while this workflow's code ran, this one included.
        var count: Int32
    }

    // Layout of the page. Offsets of the current run, then of the last crash.
    private static let size = 4096
    private static let magic: UInt64 = 0x4B45_454C_4352_5301  // "KEELCRS" + layout version 1
    private enum Offset {
        static let magic = 0, signal = 8, active = 12, lastEventId = 16, runId = 24, workflowId = 96
        static let crashCount = 1200, crashSignal = 1204, crashLastEventId = 1208, crashRunId = 1216, crashWorkflowId = 1288
    }
    private static let runIdCapacity = 68
    private static let workflowIdCapacity = 1028

    private let base: UnsafeMutableRawPointer
    /// The crash found when opening, with its count of consecutive crashes.
    let lastCrash: Crash?

    /// Opens (or creates) the marker at `path`, reads what the previous process left, records
    /// it as the last crash, and arms the signal handler.
    init(path: String) throws {
        let descriptor = open(path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw CrashMarkerError(path: path, call: "open") }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(Self.size)) == 0 else { throw CrashMarkerError(path: path, call: "ftruncate") }
        guard let mapped = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED
        else { throw CrashMarkerError(path: path, call: "mmap") }
        base = mapped
        if base.load(fromByteOffset: Offset.magic, as: UInt64.self) != Self.magic {
            memset(base, 0, Self.size)
            base.storeBytes(of: Self.magic, toByteOffset: Offset.magic, as: UInt64.self)
        }
        let previous = Self.readCrash(base)
        if base.load(fromByteOffset: Offset.active, as: Int32.self) != 0 {
            var crash = Crash(
                workflowId: Self.readString(base, Offset.workflowId), runId: Self.readString(base, Offset.runId),
                lastEventId: base.load(fromByteOffset: Offset.lastEventId, as: Int64.self),
                signal: base.load(fromByteOffset: Offset.signal, as: Int32.self), count: 1)
            if let previous, previous.workflowId == crash.workflowId { crash.count = previous.count + 1 }
            lastCrash = crash
        } else {
            lastCrash = nil  // stopped cleanly, or died outside workflow code: nothing is counted
        }
        Self.writeCrash(lastCrash, base)
        base.storeBytes(of: 0, toByteOffset: Offset.active, as: Int32.self)
        base.storeBytes(of: 0, toByteOffset: Offset.signal, as: Int32.self)
        keel_crash_marker_install(base.advanced(by: Offset.signal).assumingMemoryBound(to: Int32.self))
    }

    deinit {
        keel_crash_marker_forget(base.advanced(by: Offset.signal).assumingMemoryBound(to: Int32.self))
        munmap(base, Self.size)
    }

    /// Runs `body` (workflow code of the run) with the marker naming the run.
    @inline(__always)
    func around<T>(workflowId: String, runId: String, lastEventId: Int64, _ body: () throws -> T) rethrows -> T {
        Self.writeString(workflowId, base, Offset.workflowId, capacity: Self.workflowIdCapacity)
        Self.writeString(runId, base, Offset.runId, capacity: Self.runIdCapacity)
        base.storeBytes(of: lastEventId, toByteOffset: Offset.lastEventId, as: Int64.self)
        base.storeBytes(of: 1, toByteOffset: Offset.active, as: Int32.self)
        defer { base.storeBytes(of: 0, toByteOffset: Offset.active, as: Int32.self) }
        return try body()
    }

    /// Makes the next crash in `workflowId`'s code count as its second in a row (after an
    /// operator unblocked it: one more crash quarantines it again).
    func expectCrash(workflowId: String, runId: String) {
        Self.writeCrash(Crash(workflowId: workflowId, runId: runId, lastEventId: 0, signal: 0, count: 1), base)
    }

    private static func readCrash(_ base: UnsafeMutableRawPointer) -> Crash? {
        let count = base.load(fromByteOffset: Offset.crashCount, as: Int32.self)
        guard count > 0 else { return nil }
        return Crash(
            workflowId: readString(base, Offset.crashWorkflowId), runId: readString(base, Offset.crashRunId),
            lastEventId: base.load(fromByteOffset: Offset.crashLastEventId, as: Int64.self),
            signal: base.load(fromByteOffset: Offset.crashSignal, as: Int32.self), count: count)
    }

    private static func writeCrash(_ crash: Crash?, _ base: UnsafeMutableRawPointer) {
        base.storeBytes(of: crash?.count ?? 0, toByteOffset: Offset.crashCount, as: Int32.self)
        base.storeBytes(of: crash?.signal ?? 0, toByteOffset: Offset.crashSignal, as: Int32.self)
        base.storeBytes(of: crash?.lastEventId ?? 0, toByteOffset: Offset.crashLastEventId, as: Int64.self)
        writeString(crash?.runId ?? "", base, Offset.crashRunId, capacity: runIdCapacity)
        writeString(crash?.workflowId ?? "", base, Offset.crashWorkflowId, capacity: workflowIdCapacity)
    }

    /// A length (Int32) and up to `capacity - 4` bytes; longer ids are cut (compared cut, too).
    private static func writeString(_ value: String, _ base: UnsafeMutableRawPointer, _ offset: Int, capacity: Int) {
        var value = value
        value.withUTF8 { bytes in
            let count = min(bytes.count, capacity - 4)
            base.storeBytes(of: Int32(count), toByteOffset: offset, as: Int32.self)
            if count > 0 { memcpy(base.advanced(by: offset + 4), bytes.baseAddress!, count) }
        }
    }

    private static func readString(_ base: UnsafeMutableRawPointer, _ offset: Int) -> String {
        let count = Int(base.load(fromByteOffset: offset, as: Int32.self))
        guard count > 0, count < 2048 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: base.advanced(by: offset + 4), count: count), as: UTF8.self)
    }

    /// Whether `workflowId` is the one named by `crash` (as far as the marker could store it).
    static func names(_ crash: Crash, _ workflowId: String) -> Bool {
        crash.workflowId == String(decoding: workflowId.utf8.prefix(workflowIdCapacity - 4), as: UTF8.self)
    }

    /// The signal's name and what usually raises it, for the blocked run's reason.
    static func describe(signal: Int32) -> String {
        switch signal {
        case 0: return "no signal recorded (killed: SIGKILL, the OOM killer, or a stack overflow)"
        case SIGILL, SIGTRAP:
            return
                "signal \(signal) (\(signal == SIGILL ? "SIGILL" : "SIGTRAP"): a Swift runtime trap, such as an index out of range, a forced unwrap of nil, an arithmetic overflow or a failed precondition)"
        case SIGABRT: return "signal \(signal) (SIGABRT: an abort, such as a fatalError or a failed assertion in C code)"
        case SIGSEGV, SIGBUS:
            return "signal \(signal) (\(signal == SIGSEGV ? "SIGSEGV" : "SIGBUS"): a bad memory access, or a stack overflow)"
        case SIGFPE: return "signal \(signal) (SIGFPE: an arithmetic fault)"
        default: return "signal \(signal)"
        }
    }
}

struct CrashMarkerError: Error, CustomStringConvertible {
    var path: String
    var call: String
    var description: String { "crash marker \(path): \(call) failed: \(String(cString: strerror(errno)))" }
}
