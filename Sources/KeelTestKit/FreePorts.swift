import Foundation

/// A TCP port nothing listens on now (an HTTP endpoint, a mock server), as a string for
/// command lines. Below Linux's ephemeral range (32768-60999 by default), so that an outgoing
/// connection of a test running beside it cannot take the port between this check and the bind.
public func freeLocalPort() -> String { randomFreePort(in: 20_000..<30_000) ?? "0" }

/// A port for a broker of a test's own, free, and so is RabbitMQ's distribution port (port +
/// 20000). A fixed port collides with a broker an interrupted run left behind. Both stay below
/// Linux's ephemeral range: a test that stops its broker and starts it again leaves both ports
/// unbound for seconds, and an outgoing connection of a test beside it can take one of them
/// meanwhile and keep the node from listening (the likely cause of a CI run, 2026-12-03, whose
/// restarted node never came back within 120 s).
public func freeBrokerPort() -> String { randomFreePort(in: 10_000..<12_700, alsoFreeAbove: 20_000) ?? "5681" }

/// A random port of `range` that is free, and so is the port `alsoFreeAbove` above it if given;
/// nil after 500 tries.
private func randomFreePort(in range: Range<Int>, alsoFreeAbove offset: Int? = nil) -> String? {
    for _ in 0..<500 {
        let port = Int.random(in: range)
        if portIsFree(port), offset.map({ portIsFree(port + $0) }) ?? true { return String(port) }
    }
    return nil
}

/// Whether a TCP socket can bind `port` on every address.
public func portIsFree(_ port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr = in_addr(s_addr: INADDR_ANY)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
