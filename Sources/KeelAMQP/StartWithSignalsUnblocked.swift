import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Starts `process` with no signal blocked in it. A child inherits the signal mask of the thread
/// that starts it, and the threads of Swift's concurrency pool (Dispatch's) block every
/// asynchronous signal: a Python worker a test started there never took SIGTERM (pending,
/// blocked), ran on after its test and outlived the test process. Unblocked on the calling
/// thread only while the child is spawned.
public func startWithSignalsUnblocked(_ process: Process) throws {
    var none = sigset_t()
    sigemptyset(&none)
    var previous = sigset_t()
    pthread_sigmask(SIG_SETMASK, &none, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    try process.run()
}
