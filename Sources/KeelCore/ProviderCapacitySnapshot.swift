import Foundation

/// What the coordinator has learned of one provider's capacity: a bucket per kind (its
/// per-minute limit and what is left of it at `updated`), the concurrency cap, and how long a
/// 429 stopped every call (calls in flight are not kept: a restart counts them again from the
/// activities). Kept in the history store so that a restart does not forget it.
public struct ProviderCapacitySnapshot: Codable, Sendable, Hashable {
    public struct Bucket: Codable, Sendable, Hashable {
        /// Per minute.
        public var limit: Double
        public var available: Double
        public var updated: Date

        public init(limit: Double, available: Double, updated: Date) {
            self.limit = limit
            self.available = available
            self.updated = updated
        }
    }

    public var provider: String
    /// By ``CapacityKind`` raw value: `requests`, `tokens`, `input_tokens`, `output_tokens`.
    public var buckets: [String: Bucket]
    public var maxConcurrent: Int?
    /// No call goes to the provider before this (a 429's `retry-after`, or its exhausted window's reset).
    public var blockedUntil: Date?

    public init(provider: String, buckets: [String: Bucket], maxConcurrent: Int?, blockedUntil: Date?) {
        self.provider = provider
        self.buckets = buckets
        self.maxConcurrent = maxConcurrent
        self.blockedUntil = blockedUntil
    }
}
