import Foundation
import HTTPTypes

/// Who may use the coordinator's HTTP endpoint. Bound to a loopback address, reading is open
/// and anything that changes state (`POST`) needs `Authorization: Bearer $KEEL_API_TOKEN`;
/// bound to any other address, everything but the console's static files (which hold no data)
/// needs the token, and the coordinator refuses to start without one.
public struct AccessPolicy: Sendable {
    public let token: String?
    public let loopback: Bool

    public init(host: String, token: String?) throws {
        let token = token.flatMap { $0.isEmpty ? nil : $0 }
        loopback = Self.isLoopback(host)
        guard loopback || token != nil else {
            throw AccessPolicyError(
                message: "the HTTP endpoint is bound to \(host), which is reachable from other machines: set KEEL_API_TOKEN "
                    + "(clients send it as 'Authorization: Bearer TOKEN'), or bind it to 127.0.0.1")
        }
        self.token = token
    }

    /// Only an address literal counts: a name (even `localhost`) resolves to whatever the
    /// resolver says, and `127.example.com` is not in 127.0.0.0/8.
    static func isLoopback(_ host: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
        }
        return false
    }

    /// Why a request is refused (status and message), or nil when it may go on.
    func refusal(
        method: HTTPRequest.Method, path: String, authorization: String?
    ) -> (status: HTTPResponse.Status, message: String)? {
        if ConsoleAssets.serves(path) { return nil }
        let changesState = method != .get && method != .head
        guard changesState || !loopback else { return nil }
        guard let token else {
            return (.forbidden, "state changes through the HTTP API are disabled: start the coordinator with KEEL_API_TOKEN set")
        }
        guard let authorization, authorization.hasPrefix("Bearer ") else {
            return (.unauthorized, "send 'Authorization: Bearer TOKEN' with the coordinator's KEEL_API_TOKEN")
        }
        guard Self.constantTimeEqual(String(authorization.dropFirst("Bearer ".count)), token) else {
            return (.unauthorized, "the bearer token is not the coordinator's KEEL_API_TOKEN")
        }
        return nil
    }

    /// Compares without stopping at the first difference, so timing does not reveal the token.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<max(x.count, y.count) {
            difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
        }
        return difference == 0
    }
}

public struct AccessPolicyError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
