import Foundation
import KeelCore

/// The coordinator's view of one provider's capacity, shared by every run: a token bucket per
/// kind that refills continuously to its per-minute limit, the calls in flight, and a block
/// set by a 429. Configured limits are a starting point; response headers correct them.
struct ProviderCapacity {
    typealias Bucket = ProviderCapacitySnapshot.Bucket

    static let rateKinds: [CapacityKind] = [.requests, .tokens, .inputTokens, .outputTokens]

    var buckets: [CapacityKind: Bucket] = [:]
    var maxConcurrent: Int?
    var inFlight = 0
    var blockedUntil: Date?

    init(limits: ProviderLimits?, now: Date) {
        for kind in Self.rateKinds {
            if let limit = limits?.perMinute(kind) {
                buckets[kind] = Bucket(limit: Double(limit), available: Double(limit), updated: now)
            }
        }
        maxConcurrent = limits?.maxConcurrent
    }

    init(restoring snapshot: ProviderCapacitySnapshot, limits: ProviderLimits?, now: Date) {
        self.init(limits: limits, now: now)
        for (name, bucket) in snapshot.buckets {
            guard let kind = CapacityKind(rawValue: name), kind != .concurrent else { continue }
            buckets[kind] = bucket
        }
        maxConcurrent = limits?.maxConcurrent ?? snapshot.maxConcurrent
        blockedUntil = snapshot.blockedUntil
    }

    func snapshot(provider: String) -> ProviderCapacitySnapshot {
        ProviderCapacitySnapshot(
            provider: provider, buckets: Dictionary(uniqueKeysWithValues: buckets.map { ($0.key.rawValue, $0.value) }),
            maxConcurrent: maxConcurrent, blockedUntil: blockedUntil)
    }

    mutating func refill(_ now: Date) {
        for kind in Array(buckets.keys) {
            guard var bucket = buckets[kind] else { continue }
            let elapsed = max(now.timeIntervalSince(bucket.updated), 0)
            bucket.available = min(bucket.limit, bucket.available + elapsed * bucket.limit / 60)
            bucket.updated = now
            buckets[kind] = bucket
        }
        if let until = blockedUntil, until <= now { blockedUntil = nil }
    }

    /// What each bucket keeps back: 1.5 s of its refill. Calls admitted at the window's pace
    /// reach the provider with some jitter (queues, a loaded worker); without the margin two of
    /// them arriving together would be one over. At a steady pace it costs no throughput: the
    /// bucket only hovers higher.
    static let headroomSeconds = 1.5

    /// Whether a call of `demand` fits now. A call larger than a whole window fits once the
    /// window is full (it could never fit otherwise).
    mutating func fits(_ demand: CallDemand, now: Date) -> Bool {
        refill(now)
        if blockedUntil != nil { return false }
        if let maxConcurrent, inFlight >= maxConcurrent { return false }
        for (kind, bucket) in buckets where bucket.available < need(demand.amount(kind), bucket) {
            return false
        }
        return true
    }

    private func need(_ amount: Double, _ bucket: Bucket) -> Double {
        min(amount + bucket.limit / 60 * Self.headroomSeconds, bucket.limit)
    }

    /// Takes a call's estimate from every bucket there is, and its slot. Returns the kinds taken
    /// from: a bucket learned later (from headers) never held this call's estimate, and a refund
    /// must not give it one.
    @discardableResult
    mutating func take(_ demand: CallDemand) -> Set<CapacityKind> {
        for kind in Array(buckets.keys) { buckets[kind]?.available -= demand.amount(kind) }
        inFlight += 1
        return Set(buckets.keys)
    }

    /// Whether an admitted call that has not been sent yet still has room: the provider is not
    /// blocked, and no bucket is below zero with the call's estimate in it. Buckets learned since
    /// the admission (not in `takenFrom`) take the estimate now, when it fits; `takenFrom` then
    /// names them too. No headroom is asked: the call was admitted already.
    mutating func confirm(_ demand: CallDemand, takenFrom: inout Set<CapacityKind>, now: Date) -> Bool {
        refill(now)
        if blockedUntil != nil { return false }
        for (kind, bucket) in buckets {
            let owed = takenFrom.contains(kind) ? 0 : demand.amount(kind)
            if bucket.available - owed < 0 { return false }
        }
        for kind in Array(buckets.keys) where !takenFrom.contains(kind) {
            buckets[kind]?.available -= demand.amount(kind)
            takenFrom.insert(kind)
        }
        return true
    }

    /// A call ended: its slot is free, and `refunding` (what it took when admitted, its
    /// estimate, from the buckets `from`) is given back; ``charge(_:)`` then takes what it really
    /// used. Nil: the estimate stays taken (nobody knows what the call used).
    mutating func endCall(refunding demand: CallDemand?, from kinds: Set<CapacityKind>) {
        inFlight = max(inFlight - 1, 0)
        guard let demand else { return }
        for kind in kinds {
            guard var bucket = buckets[kind] else { continue }
            bucket.available = min(bucket.limit, bucket.available + demand.amount(kind))
            buckets[kind] = bucket
        }
    }

    /// Takes what one call really used.
    mutating func charge(_ used: CallDemand) {
        for kind in Array(buckets.keys) { buckets[kind]?.available -= used.amount(kind) }
    }

    /// Corrects the buckets with a response's headers: a limit replaces the configured one, a
    /// lower `remaining` lowers what is left (the provider counts calls this coordinator does
    /// not know of); a rate-limited answer blocks every call for its wait.
    mutating func learn(_ reading: RateLimitReading?, rateLimited: Bool, now: Date) {
        refill(now)
        for (kind, window) in reading?.windows ?? [] {
            var bucket = buckets[kind]
            if let limit = window.limit, limit > 0 {
                if var known = bucket {
                    known.available = min(known.available, Double(limit))
                    known.limit = Double(limit)
                    bucket = known
                } else {
                    bucket = Bucket(limit: Double(limit), available: Double(limit), updated: now)
                }
            }
            if let remaining = window.remaining, var known = bucket {
                known.available = min(known.available, Double(remaining))
                bucket = known
            }
            buckets[kind] = bucket
        }
        if rateLimited {
            let wait = reading?.waitSeconds ?? 1
            let until = now.addingTimeInterval(max(wait, 0.001))
            blockedUntil = max(blockedUntil ?? until, until)
            for kind in Array(buckets.keys) {
                guard var bucket = buckets[kind] else { continue }
                bucket.available = min(bucket.available, 0)
                buckets[kind] = bucket
            }
        }
    }

    /// What is left of each kind now (concurrency as free slots), for the gauge.
    func remaining() -> [(CapacityKind, Double)] {
        var values = buckets.map { ($0.key, max($0.value.available, 0)) }
        if let maxConcurrent { values.append((.concurrent, Double(max(maxConcurrent - inFlight, 0)))) }
        return values
    }
}
