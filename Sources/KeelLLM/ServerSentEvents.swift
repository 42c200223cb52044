import Foundation

/// One server-sent event.
public struct ServerSentEvent: Sendable, Hashable {
    public var event: String?
    public var data: String

    public init(event: String?, data: String) {
        self.event = event
        self.data = data
    }
}

/// Splits a byte stream into server-sent events (the `text/event-stream` format): fields per
/// line, a blank line ends an event, multi-line `data` is joined with newlines. Chunks may end
/// anywhere, even inside a UTF-8 sequence.
public struct ServerSentEventParser: Sendable {
    private var buffer = Data()
    private var event: String?
    private var data: [String] = []

    public init() {}

    /// Feeds bytes; returns the events they completed.
    public mutating func consume(_ chunk: Data) -> [ServerSentEvent] {
        buffer.append(chunk)
        var events: [ServerSentEvent] = []
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            var line = buffer[buffer.startIndex..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            buffer.removeSubrange(buffer.startIndex...newline)
            if let event = handle(String(decoding: line, as: UTF8.self)) { events.append(event) }
        }
        return events
    }

    private mutating func handle(_ line: String) -> ServerSentEvent? {
        if line.isEmpty {
            defer {
                event = nil
                data = []
            }
            guard !data.isEmpty || event != nil else { return nil }
            return ServerSentEvent(event: event, data: data.joined(separator: "\n"))
        }
        if line.hasPrefix(":") { return nil }  // a comment (keep-alive)
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = line[...]
            value = ""
        }
        switch field {
        case "event": event = String(value)
        case "data": data.append(String(value))
        default: break
        }
        return nil
    }
}
