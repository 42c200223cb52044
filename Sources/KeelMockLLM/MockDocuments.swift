import Foundation

/// The documents `GET /documents/{id}` serves: `{id}.txt` or `{id}.pdf` from a directory, or,
/// without one (or for an id with no file), a generated text so pipelines run with nothing
/// bundled.
enum MockDocuments {
    static func document(_ id: String, directory: String?) -> (data: Data, contentType: String)? {
        // Ids are file names, never paths.
        guard !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
        if let directory {
            let base = (directory as NSString).appendingPathComponent(id)
            if let pdf = FileManager.default.contents(atPath: base + ".pdf") { return (pdf, "application/pdf") }
            if let text = FileManager.default.contents(atPath: base + ".txt") { return (text, "text/plain; charset=utf-8") }
            return nil
        }
        let text =
            "Document \(id). This quarter the team shipped the billing rewrite, cut support response "
            + "times by a third and hired two engineers. Risks: a vendor contract renews in March and the "
            + "on-call rotation is thin. Next steps: finish the migration and publish the roadmap."
        return (Data(text.utf8), "text/plain; charset=utf-8")
    }
}
