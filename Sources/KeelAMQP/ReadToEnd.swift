import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reads `handle` until end of file. Foundation's `readDataToEndOfFile()` traps when a signal
/// interrupts its `read` (EINTR: it was seen killing the test process in CI); this retries the
/// interrupted read instead, and stops at end of file or at another error.
public func readToEnd(_ handle: FileHandle) -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    let descriptor = handle.fileDescriptor
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            data.append(contentsOf: buffer[0..<count])
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            return data
        }
    }
}
