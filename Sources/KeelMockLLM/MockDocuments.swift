import Foundation

/// The documents `GET /documents/{id}` serves: `{id}.txt` from a directory, or, without one,
/// a generated text so pipelines run with nothing bundled.
enum MockDocuments {
    static func text(of id: String, directory: String?) -> String? {
        // Ids are file names, never paths.
        guard !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
        if let directory {
            return try? String(contentsOfFile: (directory as NSString).appendingPathComponent(id + ".txt"), encoding: .utf8)
        }
        return "Document \(id). This quarter the team shipped the billing rewrite, cut support response "
            + "times by a third and hired two engineers. Risks: a vendor contract renews in March and the "
            + "on-call rotation is thin. Next steps: finish the migration and publish the roadmap."
    }
}
