import Foundation

/// A fresh directory under the system's temporary folder, for a test's database files.
public func makeTemporaryDirectory(_ prefix: String = "keel-test") -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))", isDirectory: true)
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
