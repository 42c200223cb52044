import Foundation

/// The business endpoints the example pipelines call, with the faults their tests need:
/// an accounting system that de-duplicates bills by `Idempotency-Key` (and can lose responses),
/// and a booking system whose bookings can be refused and cancelled.
public struct MockServicesScenario: Codable, Sendable, Hashable {
    /// This many bill creations are recorded but answered 502, as if the response were lost.
    public var accountingLostResponses: Int?
    /// Booking kinds refused with 409 (`["hotel"]`).
    public var failingBookings: [String]?

    public init(accountingLostResponses: Int? = nil, failingBookings: [String]? = nil) {
        self.accountingLostResponses = accountingLostResponses
        self.failingBookings = failingBookings
    }
}

/// A bill the accounting endpoint holds.
public struct MockBill: Codable, Sendable, Hashable {
    public var id: String
    public var idempotencyKey: String
    public var body: String
}

/// A booking the booking endpoint holds.
public struct MockBooking: Codable, Sendable, Hashable {
    public var id: String
    public var kind: String
    public var idempotencyKey: String
    public var status: String
    /// 1 for the first booking cancelled, 2 for the next…
    public var cancelledOrder: Int?
}

/// State of the business endpoints (inside ``MockState``).
struct MockServicesState: Sendable {
    var bills: [MockBill] = []
    var bookings: [MockBooking] = []
    var lostResponses = 0

    enum Answer {
        case created(Data)
        case existing(Data)
        case lost
        case refused(String)
    }

    mutating func postBill(key: String, body: Data, scenario: MockServicesScenario?) -> Answer {
        if let bill = bills.first(where: { $0.idempotencyKey == key }) { return .existing(encode(bill)) }
        let bill = MockBill(id: "bill-\(bills.count + 1)", idempotencyKey: key, body: String(decoding: body, as: UTF8.self))
        bills.append(bill)
        if lostResponses < (scenario?.accountingLostResponses ?? 0) {
            lostResponses += 1
            return .lost
        }
        return .created(encode(bill))
    }

    mutating func book(kind: String, key: String, scenario: MockServicesScenario?) -> Answer {
        if let booking = bookings.first(where: { $0.idempotencyKey == key }) { return .existing(encode(booking)) }
        if scenario?.failingBookings?.contains(kind) == true { return .refused("no \(kind) available for these dates") }
        let booking = MockBooking(id: "\(kind)-\(bookings.count + 1)", kind: kind, idempotencyKey: key, status: "booked")
        bookings.append(booking)
        return .created(encode(booking))
    }

    mutating func cancel(id: String) -> Answer {
        guard let index = bookings.firstIndex(where: { $0.id == id }) else { return .refused("no booking \(id)") }
        if bookings[index].status != "cancelled" {
            bookings[index].status = "cancelled"
            bookings[index].cancelledOrder = bookings.filter { $0.status == "cancelled" }.count
        }
        return .existing(encode(bookings[index]))
    }

    private func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(value)) ?? Data()
    }
}
