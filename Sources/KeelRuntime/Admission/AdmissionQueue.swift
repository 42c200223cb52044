import DequeModule
import Foundation
import KeelCore

/// Attempts waiting in the coordinator for capacity, in the order they are admitted: by
/// priority (1 first), and among equal priorities across fairness keys by weighted round robin
/// (stride scheduling: each key advances by 1/weight per admitted task, the key furthest behind
/// goes next), first come first served within a key.
struct AdmissionQueue {
    struct Key: Hashable, Sendable {
        var runId: String
        var activityId: Int64
    }

    struct Entry: Sendable {
        var key: Key
        var priority: Int
        var fairnessKey: String
        var since: Date
        /// An LLM call's request, decoded once for the passes that weigh it.
        var request: CallDemand.Request?
    }

    private var lanes: [Int: [String: Deque<Entry>]] = [:]
    private var located: [Key: (priority: Int, fairnessKey: String)] = [:]
    /// Stride position per priority and fairness key.
    private var passes: [Int: [String: Double]] = [:]
    let weights: [String: Double]

    init(weights: [String: Double] = [:]) { self.weights = weights }

    var count: Int { located.count }
    var isEmpty: Bool { located.isEmpty }

    func contains(_ key: Key) -> Bool { located[key] != nil }

    func weight(of fairnessKey: String) -> Double { max(weights[fairnessKey] ?? 1, 0.000_001) }

    /// Adds an entry behind those of its key. A key that had nothing waiting starts level with
    /// the keys that do, so that it neither jumps them by a backlog of credit nor lags.
    mutating func add(_ entry: Entry) {
        guard located[entry.key] == nil else { return }
        var keys = lanes[entry.priority, default: [:]]
        if keys[entry.fairnessKey]?.isEmpty ?? true {
            let active = keys.filter { !$0.value.isEmpty }.keys.compactMap { passes[entry.priority]?[$0] }
            let level = active.min() ?? passes[entry.priority]?[entry.fairnessKey] ?? 0
            passes[entry.priority, default: [:]][entry.fairnessKey] = max(
                passes[entry.priority]?[entry.fairnessKey] ?? 0, level)
        }
        // In the order they began to wait (a restart adds older ones after new ones).
        var lane = keys[entry.fairnessKey, default: []]
        var index = lane.endIndex
        while index > lane.startIndex, lane[index - 1].since > entry.since { index -= 1 }
        lane.insert(entry, at: index)
        keys[entry.fairnessKey] = lane
        lanes[entry.priority] = keys
        located[entry.key] = (entry.priority, entry.fairnessKey)
    }

    mutating func remove(_ key: Key) {
        guard let (priority, fairnessKey) = located.removeValue(forKey: key) else { return }
        lanes[priority]?[fairnessKey]?.removeAll { $0.key == key }
        if lanes[priority]?[fairnessKey]?.isEmpty ?? false { lanes[priority]?[fairnessKey] = nil }
        if lanes[priority]?.isEmpty ?? false { lanes[priority] = nil }
    }

    /// Takes an admitted entry out and moves its key on by one stride.
    mutating func admitted(_ key: Key) {
        guard let (priority, fairnessKey) = located[key] else { return }
        remove(key)
        passes[priority, default: [:]][fairnessKey, default: 0] += 1 / weight(of: fairnessKey)
    }

    /// Every waiting entry in admission order (the strides as they stand; admitting one changes
    /// the order of those after it only across keys, which the next pass takes up).
    func ordered() -> [Entry] {
        var result: [Entry] = []
        result.reserveCapacity(count)
        for priority in lanes.keys.sorted() {
            guard let keys = lanes[priority] else { continue }
            // Lanes by name, for a stable order among equal strides.
            var order = keys.sorted { $0.key < $1.key }.map { (key: $0.key, entries: $0.value, next: 0) }
            var stride = order.map { passes[priority]?[$0.key] ?? 0 }
            while true {
                // The key furthest behind that still has entries.
                var chosen: Int?
                for index in order.indices where order[index].next < order[index].entries.count {
                    if let best = chosen, stride[best] <= stride[index] { continue }
                    chosen = index
                }
                guard let index = chosen else { break }
                result.append(order[index].entries[order[index].next])
                order[index].next += 1
                stride[index] += 1 / weight(of: order[index].key)
            }
        }
        return result
    }
}
