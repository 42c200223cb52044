import Foundation

/// Rate limits the mock enforces on the requests a ``MockLimits`` entry matches, the way a
/// provider does: a token bucket per kind that refills continuously to its per-minute limit,
/// and a count of calls in flight. A request is charged one request and its input tokens plus
/// the output it is answered with, when it arrives; one that does not fit gets a 429 with
/// `retry-after`. Every answer carries the API's rate-limit headers.
struct MockLimiter {
    struct Bucket {
        let limit: Double
        var available: Double
        var updated: Date

        init(limit: Int, now: Date) {
            self.limit = Double(limit)
            available = Double(limit)
            updated = now
        }

        var perSecond: Double { limit / 60 }

        mutating func refill(_ now: Date) {
            available = min(limit, available + max(now.timeIntervalSince(updated), 0) * perSecond)
            updated = now
        }

        /// Seconds until `amount` is available (0: now).
        func wait(for amount: Double) -> Double {
            amount <= available ? 0 : (min(amount, limit) - available) / perSecond
        }

        /// Seconds until the bucket is full again.
        var reset: Double { (limit - available) / perSecond }
    }

    let limits: MockLimits
    var requests: Bucket?
    var tokens: Bucket?
    var inputTokens: Bucket?
    var outputTokens: Bucket?
    var inFlight = 0

    init(_ limits: MockLimits, now: Date) {
        self.limits = limits
        requests = limits.requestsPerMinute.map { Bucket(limit: $0, now: now) }
        tokens = limits.tokensPerMinute.map { Bucket(limit: $0, now: now) }
        inputTokens = limits.inputTokensPerMinute.map { Bucket(limit: $0, now: now) }
        outputTokens = limits.outputTokensPerMinute.map { Bucket(limit: $0, now: now) }
    }

    /// Charges a request, or says how long it must wait (seconds, rounded up) and why.
    mutating func admit(input: Int, output: Int, now: Date) -> (wait: Int, reason: String)? {
        for index in 0..<4 { self[index]?.refill(now) }
        var waits: [(Double, String)] = []
        if let maxConcurrent = limits.maxConcurrent, inFlight >= maxConcurrent {
            waits.append((1, "\(inFlight) requests in flight, the limit is \(maxConcurrent)"))
        }
        let amounts = [1, Double(input + output), Double(input), Double(output)]
        let names = ["requests", "tokens", "input tokens", "output tokens"]
        for index in 0..<4 {
            guard let bucket = self[index] else { continue }
            let wait = bucket.wait(for: amounts[index])
            if wait > 0 { waits.append((wait, "\(names[index]) per minute: \(Int(bucket.limit))")) }
        }
        if let worst = waits.max(by: { $0.0 < $1.0 }) {
            return (Int(worst.0.rounded(.up)), worst.1)
        }
        for index in 0..<4 { self[index]?.available -= amounts[index] }
        inFlight += 1
        return nil
    }

    mutating func finished() { inFlight = max(inFlight - 1, 0) }

    private subscript(index: Int) -> Bucket? {
        get { [requests, tokens, inputTokens, outputTokens][index] }
        set {
            switch index {
            case 0: requests = newValue
            case 1: tokens = newValue
            case 2: inputTokens = newValue
            default: outputTokens = newValue
            }
        }
    }

    /// The rate-limit headers `api` sends with every answer.
    func headers(api: MockAPI, now: Date) -> [String: String] {
        var headers: [String: String] = [:]
        func add(_ bucket: Bucket?, anthropic: String, openai: String) {
            guard let bucket else { return }
            let remaining = String(Int(max(bucket.available, 0).rounded(.down)))
            switch api {
            case .anthropic:
                let formatter = ISO8601DateFormatter()
                headers["anthropic-ratelimit-\(anthropic)-limit"] = String(Int(bucket.limit))
                headers["anthropic-ratelimit-\(anthropic)-remaining"] = remaining
                headers["anthropic-ratelimit-\(anthropic)-reset"] = formatter.string(
                    from: now.addingTimeInterval(bucket.reset.rounded(.up)))
            case .openai:
                guard !openai.isEmpty else { return }
                headers["x-ratelimit-limit-\(openai)"] = String(Int(bucket.limit))
                headers["x-ratelimit-remaining-\(openai)"] = remaining
                headers["x-ratelimit-reset-\(openai)"] = Self.duration(bucket.reset)
            }
        }
        add(requests, anthropic: "requests", openai: "requests")
        add(tokens, anthropic: "tokens", openai: "tokens")
        add(inputTokens, anthropic: "input-tokens", openai: "")
        add(outputTokens, anthropic: "output-tokens", openai: "")
        return prefixed(headers)
    }

    /// `headers` behind the entry's `headerPrefix`, if it has one.
    func prefixed(_ headers: [String: String]) -> [String: String] {
        guard let prefix = limits.headerPrefix, !prefix.isEmpty else { return headers }
        return Dictionary(uniqueKeysWithValues: headers.map { (prefix + $0.key, $0.value) })
    }

    /// OpenAI's duration format: `1m30s`, `6.5s`, `120ms`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded(.up)))ms" }
        let minutes = Int(seconds / 60)
        let rest = seconds - Double(minutes * 60)
        let restText = String(format: "%.1fs", rest).replacingOccurrences(of: ".0s", with: "s")
        return minutes > 0 ? "\(minutes)m\(restText)" : restText
    }
}
