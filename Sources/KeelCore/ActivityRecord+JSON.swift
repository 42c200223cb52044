import Foundation

// Written by hand for the history file, where every step saves its activity's record two or
// three times: through Foundation's `JSONEncoder` that was 5 % of the coordinator's CPU in
// `bench throughput`. `Decodable` reads it back as before.
extension ActivityRecord {
    /// Writes the record as its synthesized `Encodable` conformance does, with its options
    /// already encoded (`encodedOptions`: `JSONEncoder`'s output for ``options``, which most
    /// activities of a run share).
    package func write(to writer: inout JSONWriter, encodedOptions: Data) throws {
        // Rare: the failure of an exhausted activity parked for an operator.
        let failure = try parkedFailure.map { failure in
            let encoder = JSONEncoder()
            if writer.dates == .since1970 { encoder.dateEncodingStrategy = .secondsSince1970 }
            return try encoder.encode(failure)
        }
        try writer.object { json in
            json.member("runId", runId)
            json.member("activityId", activityId)
            json.member("activityType", activityType)
            try json.member("input", input)
            json.key("options")
            json.raw(encodedOptions)
            json.member("attempt", attempt)
            json.member("state", state.rawValue)
            try json.member("scheduledAt", scheduledAt)
            try json.member("attemptScheduledAt", attemptScheduledAt)
            try json.member("startedAt", startedAt)
            json.member("startedByClaim", startedByClaim)
            json.member("startedBy", startedBy)
            try json.member("heartbeatDetails", heartbeatDetails)
            json.member("attemptsBeforeRedrive", attemptsBeforeRedrive)
            if let failure {
                json.key("parkedFailure")
                json.raw(failure)
            }
            try json.member("lastHeartbeatAt", lastHeartbeatAt)
            json.member("lastProviders", lastProviders)
            try json.member("waitingSince", waitingSince)
            json.member("route", route)
            json.member("rateLimitedAttempts", rateLimitedAttempts)
            try json.member("capacityWait", capacityWait)
            json.member("unstartedRedeliveries", unstartedRedeliveries)
            json.member("claimFirst", claimFirst)
        }
    }
}
