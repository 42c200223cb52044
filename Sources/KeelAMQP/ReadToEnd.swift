import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reads `handle` until end of file with asynchronous signals blocked on the calling thread.
/// Foundation's `readDataToEndOfFile()` traps when a signal interrupts its `read` (EINTR: seen
/// killing the test process in CI); blocked here, such a signal goes to another thread instead.
/// Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP) are never blocked.
public func readToEnd(_ handle: FileHandle) -> Data {
    var blocked = sigset_t()
    sigfillset(&blocked)
    for fault in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP] { sigdelset(&blocked, fault) }
    var previous = sigset_t()
    pthread_sigmask(SIG_BLOCK, &blocked, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    return handle.readDataToEndOfFile()
}
