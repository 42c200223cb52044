import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Lets a thread that owns a rabbitmq-c connection sleep until either the broker sent something
/// or another thread handed it work: it polls the connection's socket and a pipe that
/// ``signal()`` writes to.
public final class Wakeup: Sendable {
    private let readEnd: Int32
    private let writeEnd: Int32

    public init() {
        var fds: [Int32] = [-1, -1]
        _ = pipe(&fds)
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        (readEnd, writeEnd) = (fds[0], fds[1])
    }

    deinit {
        Glibc.close(readEnd)
        Glibc.close(writeEnd)
    }

    /// Wakes the sleeping thread (or makes its next sleep return at once).
    public func signal() {
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    /// Sleeps until ``signal()``, input on `socket` (if given), or `timeout` seconds. Returns
    /// whether `socket` may have input to read: false only when a ``signal()`` alone ended the
    /// sleep, so the caller need not ask the socket (a `recv` that fails and a `poll` that does
    /// not wait, in rabbitmq-c) before it sleeps again. A timeout returns true, so that an idle
    /// connection still goes through rabbitmq-c's reads, which send and check its heartbeats.
    @discardableResult
    public func sleep(socket: Int32?, timeout: Double) -> Bool {
        var descriptors = [pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)]
        if let socket { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        let ready = poll(&descriptors, nfds_t(descriptors.count), Int32(max(timeout, 0) * 1000))
        if descriptors[0].revents != 0 {
            var drained = [UInt8](repeating: 0, count: 256)
            while read(readEnd, &drained, drained.count) > 0 {}
        }
        guard socket != nil, ready > 0, descriptors[1].revents == 0 else { return true }
        return false
    }
}
