import KeelCore

/// The history database failed. `resultCode` keeps SQLite's result code (primary and extended,
/// `SQLITE_FULL` is 13, `SQLITE_BUSY` 5…) when SQLite gave one, so callers can tell a full disk
/// from a corrupt file without reading the message.
public struct StoreError: KeelError {
    public var message: String
    public var resultCode: Int32?
    /// A later coordinator took the history over (a higher epoch): this one must stop.
    public var fenced: Bool

    public init(message: String, resultCode: Int32? = nil, fenced: Bool = false) {
        self.message = message
        self.resultCode = resultCode
        self.fenced = fenced
    }

    public var errorType: String { "StoreError" }

    /// SQLite's primary result code (the low byte of an extended one).
    public var primaryResultCode: Int32? { resultCode.map { $0 & 0xFF } }
}
