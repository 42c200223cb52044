import Foundation
import Keel

/// A saga: book a flight, book a hotel, have an LLM write the itinerary. When a step fails after
/// bookings were made, the bookings are cancelled in reverse order, each cancellation a durable,
/// retried activity, and the workflow then fails with the original error.
public struct TripBooking: Workflow {
    public static let name = "trip-booking"

    public struct Input: Codable, Sendable {
        public var traveller: String
        public var destination: String
        public var dates: String
        public var bookingsURL: String
        public init(traveller: String, destination: String, dates: String, bookingsURL: String) {
            self.traveller = traveller
            self.destination = destination
            self.dates = dates
            self.bookingsURL = bookingsURL
        }
    }

    public struct Output: Codable, Sendable {
        public var flight: String
        public var hotel: String
        public var itinerary: String
    }

    public init() {}

    public func run(context: WorkflowContext, input: Input) async throws -> Output {
        let options = ActivityOptions(
            startToCloseTimeout: .seconds(30), scheduleToCloseTimeout: .seconds(300),
            retryPolicy: RetryPolicy(
                initialInterval: .seconds(1), maximumAttempts: 5, nonRetryableErrorTypes: ["ServiceRejected"]))
        var booked: [String] = []
        do {
            let flight = try await context.execute(Book.self, input: .init(input, kind: "flight"), options: options)
            booked.append(flight)
            let hotel = try await context.execute(Book.self, input: .init(input, kind: "hotel"), options: options)
            booked.append(hotel)
            let itinerary = try await context.llm(
                LLMRequest(
                    prompt:
                        "[itinerary] Write a day-by-day itinerary for \(input.traveller) in \(input.destination), \(input.dates). "
                        + "Flight \(flight), hotel \(hotel)."))
            return Output(flight: flight, hotel: hotel, itinerary: itinerary.text)
        } catch {
            let compensation = ActivityOptions(
                startToCloseTimeout: .seconds(30),
                retryPolicy: RetryPolicy(initialInterval: .seconds(1), maximumInterval: .seconds(60), maximumAttempts: 0))
            for id in booked.reversed() {
                _ = try await context.execute(
                    CancelBooking.self, input: .init(bookingsURL: input.bookingsURL, id: id), options: compensation)
            }
            throw error
        }
    }

    /// Books a flight or a hotel; returns the booking id.
    public struct Book: Activity {
        public static let name = "bookings.book"

        public struct Input: Codable, Sendable {
            public var bookingsURL: String
            public var kind: String
            public var traveller: String
            public var destination: String
            public var dates: String

            init(_ trip: TripBooking.Input, kind: String) {
                bookingsURL = trip.bookingsURL
                self.kind = kind
                traveller = trip.traveller
                destination = trip.destination
                dates = trip.dates
            }
        }

        public init() {}

        public func run(context: ActivityContext, input: Input) async throws -> String {
            let data = try await ServiceCall.post(
                ServiceCall.url(input.bookingsURL, "/bookings/" + input.kind), json: input, idempotencyKey: context.idempotencyKey
            )
            struct Booking: Decodable { var id: String }
            guard let booking = try? JSONDecoder().decode(Booking.self, from: data) else {
                throw ApplicationError(message: "the booking system answered without an id", type: "ServiceUnavailable")
            }
            return booking.id
        }
    }

    /// Cancels a booking (idempotent on the booking system's side).
    public struct CancelBooking: Activity {
        public static let name = "bookings.cancel"

        public struct Input: Codable, Sendable {
            public var bookingsURL: String
            public var id: String
        }

        public init() {}

        public func run(context: ActivityContext, input: Input) async throws -> String {
            _ = try await ServiceCall.post(
                ServiceCall.url(input.bookingsURL, "/cancellations/\(input.id)"), json: [String: String](),
                idempotencyKey: context.idempotencyKey)
            return input.id
        }
    }
}
