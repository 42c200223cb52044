import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import KeelRuntime
import NIOCore

/// The JSON API under `/api/` (docs/api.md) and the console's pages, on a Hummingbird router.
public enum ConsoleRoutes {
    /// Adds the access check, the API and the console to `router`.
    public static func add(to router: Router<BasicRequestContext>, backend: ConsoleBackend, access: AccessPolicy) {
        router.add(middleware: AccessMiddleware(policy: access))
        addAssets(to: router)
        addReads(to: router, backend)
        addActions(to: router, backend)
    }

    private static func addAssets(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/console/"]) }
        router.get("/console/") { _, _ in asset(ConsoleAssets.html, "text/html; charset=utf-8") }
        router.get("/console/app.js") { _, _ in asset(ConsoleAssets.script, "text/javascript; charset=utf-8") }
        router.get("/console/style.css") { _, _ in asset(ConsoleAssets.style, "text/css; charset=utf-8") }
    }

    private static func addReads(to router: Router<BasicRequestContext>, _ backend: ConsoleBackend) {
        router.get("/api/runs") { request, _ in
            try await answer { json(try backend.runs(try runQuery(request))) }
        }
        router.get("/api/runs/:id") { request, context in
            try await answer {
                let workflowId = try parameter("id", context)
                guard let detail = try backend.run(workflowId: workflowId, runId: text(request, "run")) else {
                    throw ConsoleError.notFound("no workflow \(workflowId)")
                }
                return json(detail)
            }
        }
        router.get("/api/runs/:id/query/:name") { request, context in
            try await answer {
                let argument = try text(request, "argument").map { try payload($0, field: "argument") }
                let result = try await backend.query(
                    workflowId: try parameter("id", context), name: try parameter("name", context), argument: argument)
                return json(["result": result])
            }
        }
        router.get("/api/dlq") { request, _ in
            try await answer {
                let limit = try integer(text(request, "limit"), name: "limit") ?? 1000
                return json(["items": try await backend.deadLetterItems(limit: limit)])
            }
        }
        router.get("/api/queues") { _, _ in try await answer { json(["queues": backend.queues()]) } }
        router.get("/api/breakers") { _, _ in try await answer { json(["breakers": try backend.breakers()]) } }
        router.get("/api/schedules") { _, _ in try await answer { json(["schedules": try backend.schedules()]) } }
    }

    private static func addActions(to router: Router<BasicRequestContext>, _ backend: ConsoleBackend) {
        router.post("/api/runs/:id/signal") { request, context in
            try await answer {
                let body = try await jsonBody(request, as: SignalBody.self)
                guard !body.name.isEmpty else { throw ConsoleError.badRequest("the signal needs a name") }
                let workflowId = try parameter("id", context)
                try await backend.signal(workflowId: workflowId, name: body.name, input: body.input ?? .null)
                return json(["sent": true])
            }
        }
        router.post("/api/runs/:id/cancel") { _, context in
            try await answer {
                try await backend.cancel(workflowId: try parameter("id", context))
                return json(["sent": true])
            }
        }
        router.post("/api/schedules/:name/:action") { _, context in
            try await answer {
                let name = try parameter("name", context)
                switch try parameter("action", context) {
                case "pause":
                    return json(["schedule": try await backend.client.pauseSchedule(name, note: "paused from the console")])
                case "unpause": return json(["schedule": try await backend.client.unpauseSchedule(name)])
                case "trigger": return json(["firing": try await backend.client.triggerSchedule(name)])
                case let action: throw ConsoleError.notFound("no schedule action '\(action)'; use pause, unpause or trigger")
                }
            }
        }
        router.post("/api/dlq/:id/redrive") { _, context in
            try await answer { outcome(try await backend.redrive(id: try parameter("id", context))) }
        }
        router.post("/api/dlq/:id/discard") { _, context in
            try await answer { outcome(try await backend.discard(id: try parameter("id", context))) }
        }
    }

    struct SignalBody: Decodable {
        var name: String
        var input: Payload?
    }

    // MARK: Helpers

    static func runQuery(_ request: Request) throws -> RunQuery {
        var query = RunQuery()
        if let status = text(request, "status"), !status.isEmpty {
            guard let filter = RunQuery.StatusFilter(status) else {
                throw ConsoleError.badRequest(
                    "unknown status '\(status)'; use one of \(RunQuery.StatusFilter.names.joined(separator: ", "))")
            }
            query.status = filter
        }
        if let type = text(request, "type"), !type.isEmpty { query.workflowType = type }
        if let search = text(request, "search"), !search.isEmpty { query.search = search }
        if let sort = text(request, "sort"), !sort.isEmpty {
            guard let order = RunQuery.Order(rawValue: sort) else {
                throw ConsoleError.badRequest("sort is started or cost, not '\(sort)'")
            }
            query.order = order
        }
        if let minimum = text(request, "minCost"), !minimum.isEmpty {
            guard let value = Double(minimum), value >= 0 else {
                throw ConsoleError.badRequest("minCost must be a number of dollars, not '\(minimum)'")
            }
            query.minCostUSD = value
        }
        query.costOutliersOnly = text(request, "outliers") == "true"
        query.limit = try integer(text(request, "limit"), name: "limit") ?? 100
        return query
    }

    /// A query parameter, decoded.
    static func text(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters[name[...]].map(String.init)
    }

    static func integer(_ text: String?, name: String) throws -> Int? {
        guard let text, !text.isEmpty else { return nil }
        guard let value = Int(text), (1...10_000).contains(value) else {
            throw ConsoleError.badRequest("\(name) must be a whole number from 1 to 10000, not '\(text)'")
        }
        return value
    }

    static func parameter(_ name: String, _ context: BasicRequestContext) throws -> String {
        guard let raw = context.parameters.get(name), let value = raw.removingPercentEncoding, !value.isEmpty else {
            throw ConsoleError.badRequest("missing \(name)")
        }
        return value
    }

    static func payload(_ text: String, field: String) throws -> Payload {
        guard (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil else {
            throw ConsoleError.badRequest("\(field) is not JSON: \(text.prefix(200))")
        }
        return Payload(data: Data(text.utf8))
    }

    static func jsonBody<T: Decodable>(_ request: Request, as type: T.Type) async throws -> T {
        var request = request
        let body = try await request.collectBody(upTo: 2 << 20)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: body))
        } catch {
            throw ConsoleError.badRequest("the request body is not the expected JSON (see docs/api.md): \(error)")
        }
    }

    /// Runs `body`; errors become JSON answers with their status.
    static func answer(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch ConsoleError.notFound(let message) {
            return json(["error": message], status: .notFound)
        } catch ConsoleError.badRequest(let message) {
            return json(["error": message], status: .badRequest)
        } catch let failure as Failure {
            // The coordinator answered with an error (an unknown query, a failing handler).
            return json(["error": failure.message, "type": failure.type], status: .unprocessableContent)
        } catch let error as KeelError {
            return json(["error": error.message, "type": error.errorType], status: .badGateway)
        } catch {
            return json(["error": "\(error)"], status: .internalServerError)
        }
    }

    /// 200 when the redrive or discard was done, 409 (with why) when not.
    static func outcome(_ outcome: DeadLetterQueue.Outcome) -> Response {
        json(outcome, status: outcome.done ? .ok : .conflict)
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data(#"{"error":"the answer could not be encoded"}"#.utf8)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
    }

    static func asset(_ text: String, _ type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: AccessPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        if let refusal = policy.refusal(
            method: request.method, path: request.uri.path, authorization: request.headers[.authorization])
        {
            var headers: HTTPFields = [.contentType: "application/json"]
            if refusal.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
            let body = (try? JSONEncoder().encode(["error": refusal.message])) ?? Data()
            return Response(status: refusal.status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(data: body)))
        }
        return try await next(request, context)
    }
}
