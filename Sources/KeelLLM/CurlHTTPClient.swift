import CCurl
import Foundation
import Synchronization

/// An HTTP request for ``CurlHTTPClient``.
public struct HTTPRequest: Sendable {
    public var url: String
    public var method: String
    public var headers: [(name: String, value: String)]
    public var body: Data
    /// Time the whole exchange may take, seconds.
    public var timeout: Double
    /// Time to establish the connection, seconds.
    public var connectTimeout: Double
    /// A response that sends nothing for this long is abandoned, seconds (a stalled stream).
    public var idleTimeout: Double?

    public init(
        url: String, method: String = "POST", headers: [(name: String, value: String)] = [],
        body: Data = Data(), timeout: Double = 120, connectTimeout: Double = 10, idleTimeout: Double? = nil
    ) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
    }
}

/// Status line and headers of a response; header names are lower-cased.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status: Int
    public var headers: [String: String]

    public init(status: Int, headers: [String: String]) {
        self.status = status
        self.headers = headers
    }
}

/// A transfer that did not complete: no connection, a timeout, a connection cut mid-response.
public struct HTTPTransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case connect, timeout, interrupted, cancelled, other
    }
    public var kind: Kind
    public var message: String
    /// Set when the status line had arrived before the transfer broke off.
    public var head: HTTPResponseHead?

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// HTTP over libcurl. Each transfer runs `curl_easy_perform` on its own thread, so callers
/// never block Swift's cooperative pool; the body arrives in chunks as the server sends it.
///
/// The client never retries: the engine's retry policy is the only retry layer.
public struct CurlHTTPClient: Sendable {
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init() { _ = Self.globalInit }

    /// Sends `request`; `onHead` runs once the headers are in, `onBody` for every chunk of the
    /// body (on the transfer's thread, in order). Returns the head after the body has ended.
    /// Throws ``HTTPTransportError`` when the transfer fails or the task is cancelled.
    public func send(
        _ request: HTTPRequest, onHead: @escaping @Sendable (HTTPResponseHead) -> Void = { _ in },
        onBody: @escaping @Sendable (Data) -> Void
    ) async throws -> HTTPResponseHead {
        let transfer = CurlTransfer(request: request, onHead: onHead, onBody: onBody)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    continuation.resume(with: transfer.perform())
                }
                thread.name = "keel-http"
                thread.start()
            }
        } onCancel: {
            transfer.cancel()
        }
    }

    /// Sends `request` and collects the whole body.
    public func send(_ request: HTTPRequest) async throws -> (HTTPResponseHead, Data) {
        let body = Mutex(Data())
        let head = try await send(request) { chunk in body.withLock { $0.append(chunk) } }
        return (head, body.withLock { $0 })
    }
}

/// One libcurl easy transfer; its callbacks get a pointer to it.
private final class CurlTransfer: @unchecked Sendable {
    let request: HTTPRequest
    let onHead: @Sendable (HTTPResponseHead) -> Void
    let onBody: @Sendable (Data) -> Void
    let cancelled = Atomic<Bool>(false)
    // Touched only on the transfer's thread.
    var status = 0
    var headers: [String: String] = [:]
    var headDelivered = false

    init(
        request: HTTPRequest, onHead: @escaping @Sendable (HTTPResponseHead) -> Void,
        onBody: @escaping @Sendable (Data) -> Void
    ) {
        self.request = request
        self.onHead = onHead
        self.onBody = onBody
    }

    /// The transfer's socket while it runs (-1: none), so that a cancel can shut it down.
    let socket = Mutex<Int32>(-1)

    /// Stops the transfer at once: the socket is shut down (libcurl's progress callback alone
    /// would notice only within about a second), which also tells the server the call is over.
    func cancel() {
        cancelled.store(true, ordering: .relaxed)
        socket.withLock { fd in
            if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    var head: HTTPResponseHead { HTTPResponseHead(status: status, headers: headers) }

    func deliverHead() {
        guard !headDelivered else { return }
        headDelivered = true
        onHead(head)
    }

    func perform() -> Result<HTTPResponseHead, any Error> {
        guard let curl = curl_easy_init() else {
            return .failure(HTTPTransportError(kind: .other, message: "curl_easy_init failed"))
        }
        defer { curl_easy_cleanup(curl) }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for header in request.headers {
            headerList = curl_slist_append(headerList, "\(header.name): \(header.value)")
        }
        // libcurl would otherwise send `Expect: 100-continue` for large bodies and wait for it.
        headerList = curl_slist_append(headerList, "Expect:")
        let this = Unmanaged.passUnretained(self).toOpaque()
        let code: CURLcode = request.body.withUnsafeBytes { body in
            errorBuffer.withUnsafeMutableBufferPointer { errors in
                keel_curl_setopt_string(curl, CURLOPT_URL, request.url)
                keel_curl_setopt_string(curl, CURLOPT_CUSTOMREQUEST, request.method)
                keel_curl_setopt_pointer(curl, CURLOPT_HTTPHEADER, headerList)
                keel_curl_setopt_pointer(curl, CURLOPT_ERRORBUFFER, errors.baseAddress)
                keel_curl_setopt_long(curl, CURLOPT_NOSIGNAL, 1)
                keel_curl_setopt_long(curl, CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000))
                keel_curl_setopt_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000))
                if let idle = request.idleTimeout {
                    keel_curl_setopt_long(curl, CURLOPT_LOW_SPEED_LIMIT, 1)
                    keel_curl_setopt_long(curl, CURLOPT_LOW_SPEED_TIME, max(Int(idle.rounded(.up)), 1))
                }
                if request.method != "GET" {
                    keel_curl_setopt_long(curl, CURLOPT_POST, 1)
                    keel_curl_setopt_pointer(curl, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: body.baseAddress))
                    keel_curl_setopt_long(curl, CURLOPT_POSTFIELDSIZE, body.count)
                }
                keel_curl_set_header_callback(curl, curlHeaderCallback, this)
                keel_curl_set_write_callback(curl, curlWriteCallback, this)
                keel_curl_set_progress_callback(curl, curlProgressCallback, this)
                keel_curl_set_sockopt_callback(curl, curlSocketCallback, this)
                let code = curl_easy_perform(curl)
                // libcurl may close the socket from here on: a late cancel must not touch it.
                socket.withLock { $0 = -1 }
                return code
            }
        }
        if code == CURLE_OK {
            deliverHead()
            return .success(head)
        }
        let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: HTTPTransportError.Kind
        switch code {
        // A cancel shuts the socket down: whatever libcurl then reports, the transfer was cancelled.
        case _ where cancelled.load(ordering: .relaxed): kind = .cancelled
        case CURLE_OPERATION_TIMEDOUT: kind = .timeout
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: kind = .connect
        case CURLE_PARTIAL_FILE, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING: kind = .interrupted
        default: kind = status > 0 ? .interrupted : .other
        }
        return .failure(
            HTTPTransportError(
                kind: kind, message: "\(request.method) \(request.url): \(message)",
                head: status > 0 ? head : nil))
    }
}

private func curlHeaderCallback(
    data: UnsafeMutablePointer<CChar>?, size: Int, count: Int, user: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let data, let user else { return length }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    if line.hasPrefix("HTTP/") {
        // A new status line (after a 100 Continue or a redirect) starts a new set of headers.
        let parts = line.split(separator: " ", maxSplits: 2)
        transfer.status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        transfer.headers = [:]
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        transfer.headers[name] = value
    }
    return length
}

private func curlWriteCallback(
    data: UnsafeMutablePointer<CChar>?, size: Int, count: Int, user: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let data, let user else { return length }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    if transfer.cancelled.load(ordering: .relaxed) { return 0 }
    transfer.deliverHead()
    transfer.onBody(Data(bytes: data, count: length))
    return length
}

private func curlSocketCallback(user: UnsafeMutableRawPointer?, fd: curl_socket_t, _: curlsocktype) -> Int32 {
    guard let user else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    transfer.socket.withLock { $0 = fd }
    // A cancel that came before the socket existed.
    if transfer.cancelled.load(ordering: .relaxed) { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    return 0  // CURL_SOCKOPT_OK
}

private func curlProgressCallback(
    user: UnsafeMutableRawPointer?, _: curl_off_t, _: curl_off_t, _: curl_off_t, _: curl_off_t
) -> Int32 {
    guard let user else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    return transfer.cancelled.load(ordering: .relaxed) ? 1 : 0
}
