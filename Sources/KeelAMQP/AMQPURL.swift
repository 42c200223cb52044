import Foundation

/// `amqp://user:password@host:port/vhost` or `amqps://…` (TLS).
public struct AMQPURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String
    public var tls: Bool

    public init(_ text: String) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            scheme == "amqp" || scheme == "amqps", let host = components.host, !host.isEmpty
        else {
            throw AMQPError(.invalidURL, "'\(text)' is not an AMQP URL; expected amqp://user:password@host:5672/vhost")
        }
        tls = scheme == "amqps"
        self.host = host
        port = components.port ?? (tls ? 5671 : 5672)
        user = components.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? "guest"
        password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding } ?? "guest"
        let path = components.percentEncodedPath
        vhost = path.isEmpty || path == "/" ? "/" : String(path.dropFirst()).removingPercentEncoding ?? "/"
    }

    /// The URL without its password, for logs.
    public var description: String { "\(tls ? "amqps" : "amqp")://\(user)@\(host):\(port)/\(vhost == "/" ? "" : vhost)" }

    /// `KEEL_AMQP_URL`, or a local broker on `KEEL_AMQP_PORT` (default 5672).
    public static func fromEnvironment() throws -> AMQPURL {
        let environment = ProcessInfo.processInfo.environment
        if let url = environment["KEEL_AMQP_URL"], !url.isEmpty { return try AMQPURL(url) }
        return try AMQPURL("amqp://guest:guest@localhost:\(environment["KEEL_AMQP_PORT"] ?? "5672")")
    }
}

/// A RabbitMQ operation failed.
public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case invalidURL, invalidSetting, connectionFailed, loginFailed, channelFailed, declareFailed, publishFailed
        case publishNotConfirmed, consumeFailed, connectionLost
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "AMQP \(code.rawValue): \(message)" }
    /// The broker refused the operation to this user (403): a permission it does not have.
    public var isAccessRefused: Bool { message.contains("ACCESS_REFUSED") }
}
