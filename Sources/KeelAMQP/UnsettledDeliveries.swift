/// The delivery tags one connection handed out and not yet settled, and the frames that settle
/// a round of acks and rejects in as few as possible: every ack below the lowest tag still
/// unsettled folds into one `multiple` ack (a broker frame and a queue operation for the lot,
/// instead of one per delivery); an ack above it goes alone, since a `multiple` ack would
/// settle the delivery still being worked on.
struct UnsettledDeliveries {
    enum Frame: Equatable {
        case ack(UInt64, multiple: Bool)
        case reject(UInt64)
    }

    /// A settlement the consumer's user asked for.
    enum Settlement: Sendable, Equatable {
        case ack(UInt64)
        /// Everything delivered up to and including the tag.
        case ackThrough(UInt64)
        case reject(UInt64)
    }

    /// Each unsettled delivery's tag, and the consumer it came to.
    private var tags: [UInt64: String] = [:]

    /// Deliveries handed out and not settled.
    var count: Int { tags.count }

    /// How many of them came to each consumer.
    var countByConsumer: [String: Int] {
        var counts: [String: Int] = [:]
        for consumer in tags.values { counts[consumer, default: 0] += 1 }
        return counts
    }

    mutating func delivered(_ tag: UInt64, to consumer: String = "") { tags[tag] = consumer }

    /// The frames for `settlements`, in an order the broker accepts: rejects first, then acks.
    mutating func frames(settling settlements: [Settlement]) -> [Frame] {
        var frames: [Frame] = []
        var acked: [UInt64] = []
        for settlement in settlements {
            switch settlement {
            case .reject(let tag):
                guard tags.removeValue(forKey: tag) != nil else { continue }
                frames.append(.reject(tag))
            case .ack(let tag):
                guard tags.removeValue(forKey: tag) != nil else { continue }
                acked.append(tag)
            case .ackThrough(let tag):
                let covered = tags.keys.filter { $0 <= tag }
                guard !covered.isEmpty else { continue }
                for key in covered { tags.removeValue(forKey: key) }
                acked.append(tag)
            }
        }
        let lowestUnsettled = tags.keys.min() ?? .max
        let folded = acked.filter { $0 < lowestUnsettled }.max()
        if let folded { frames.append(.ack(folded, multiple: true)) }
        for tag in acked.sorted() where tag > lowestUnsettled { frames.append(.ack(tag, multiple: false)) }
        return frames
    }
}
