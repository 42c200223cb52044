import Foundation
import Keel
import KeelTestKit
import Testing

/// The coordinator's JSON API over real HTTP and its console in a real headless browser, with
/// data from real runs through real processes and the broker.
@Suite("Web console and /api/", .tags(.integration), .timeLimit(.minutes(3)))
struct ConsoleTests {
    static let token = "console-test-token"

    struct Answer {
        var status: Int
        var body: Data
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    static func call(
        _ port: String, _ path: String, method: String = "GET", token: String? = nil, body: String? = nil
    ) async throws -> Answer {
        var headers: [(name: String, value: String)] = []
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let (head, data) = try await CurlHTTPClient().send(
            HTTPRequest(
                url: "http://127.0.0.1:\(port)\(path)", method: method, headers: headers, body: Data((body ?? "").utf8),
                timeout: 30))
        return Answer(status: head.status, body: data)
    }

    static func workflowIds(_ answer: Answer) -> [String] {
        ((answer.json["runs"] as? [[String: Any]]) ?? []).compactMap { ($0["run"] as? [String: Any])?["workflowId"] as? String }
    }

    /// The DOM after the console's script ran, from Debian's chromium.
    static func browse(_ url: String) async throws -> String {
        let profile = makeTemporaryDirectory("keel-chromium")
        defer { try? FileManager.default.removeItem(at: profile) }
        let (status, output) = try await runToEnd(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile.path)",
                "--virtual-time-budget=8000", "--dump-dom", url
            ],
            environment: [:])
        #expect(status == 0, "\(output.suffix(2000))")
        return output
    }

    @Test func theAPIAndTheConsoleShowRealRunsAndStateChangesNeedTheToken() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = ["KEEL_API_TOKEN": Self.token, "KEEL_QUEUE_CHECK_SECONDS": "0.2"]
        let port = freeLocalPort()
        try deployment.startCoordinator(["--http-port", port])
        try deployment.startWorker(concurrency: 2)
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "bench-steps", workflowId: "console-ok",
                input: try Payload(encoding: ["steps": 2, "milliseconds": 20], field: "input")))
        // Each attempt outlives its start-to-close timeout: two timeouts, then it parks.
        let slow = JSONValue.object([
            "activityType": .string("sleep"), "input": .object(["step": .number(1), "milliseconds": .number(3000)]),
            "startToCloseSeconds": .number(0.3), "maximumAttempts": .number(2), "park": .bool(true)
        ])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "call-activity", workflowId: "console-slow", input: try Payload(encoding: slow, field: "input")))
        #expect(try await deployment.client.waitForResult(workflowId: "console-ok", timeout: 30).status == .completed)

        // Lists and filters.
        var parked = Answer(status: 0, body: Data())
        #expect(
            try await eventually(20) {
                parked = try await Self.call(port, "/api/runs?status=parked")
                return Self.workflowIds(parked) == ["console-slow"]
            }, "\(parked.text)")
        let all = try await Self.call(port, "/api/runs")
        #expect(all.status == 200)
        #expect(Set(Self.workflowIds(all)) == ["console-ok", "console-slow"])
        #expect(all.json["workflowTypes"] as? [String] == ["bench-steps", "call-activity"])
        #expect(Self.workflowIds(try await Self.call(port, "/api/runs?type=bench-steps")) == ["console-ok"])
        #expect(Self.workflowIds(try await Self.call(port, "/api/runs?search=slow")) == ["console-slow"])
        #expect(Self.workflowIds(try await Self.call(port, "/api/runs?status=completed&sort=cost")) == ["console-ok"])
        let bad = try await Self.call(port, "/api/runs?status=sideways")
        #expect(bad.status == 400)
        #expect((bad.json["error"] as? String)?.contains("unknown status 'sideways'") == true)
        #expect(try await Self.call(port, "/api/runs?limit=0").status == 400)

        // A run's page data: its attempts as timeline spans.
        let detail = try await Self.call(port, "/api/runs/console-slow")
        #expect(detail.status == 200)
        let attempts = try #require(detail.json["attempts"] as? [[String: Any]])
        #expect(attempts.map { $0["outcome"] as? String } == ["timedOut", "parked"], "\(detail.text)")
        #expect(attempts.map { $0["attempt"] as? Int } == [1, 2])
        #expect(
            attempts.allSatisfy { ($0["worker"] as? String)?.isEmpty == false && $0["startedAt"] != nil && $0["endedAt"] != nil })
        #expect((detail.json["traceId"] as? String)?.count == 32)
        #expect(try await Self.call(port, "/api/runs/no-such-run").status == 404)

        // Dead letters, queues, breakers.
        let dlq = try await Self.call(port, "/api/dlq")
        let items = try #require(dlq.json["items"] as? [[String: Any]])
        let item = try #require(items.first { (($0["entry"] as? [String: Any])?["workflowId"] as? String) == "console-slow" })
        let itemId = try #require(item["id"] as? String)
        // Entry ids hold slashes (`<run id>/<activity id>/<attempt>`): one path segment, encoded.
        let itemPath = "/api/dlq/" + (itemId.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? itemId)
        var queues = Answer(status: 0, body: Data())
        #expect(
            try await eventually(10) {
                queues = try await Self.call(port, "/api/queues")
                let all = (queues.json["queues"] as? [[String: Any]]) ?? []
                return all.contains {
                    $0["taskQueue"] as? String == "default" && $0["consumers"] as? Int == 1
                        && ($0["dispatched"] as? Int ?? 0) >= 4
                }
            }, "\(queues.text)")
        let breakers = try await Self.call(port, "/api/breakers")
        #expect(breakers.status == 200 && breakers.json["breakers"] is [Any])

        // The console, rendered by a real browser from that data.
        let runPage = try await Self.browse("http://127.0.0.1:\(port)/console/#/run/console-slow")
        #expect(runPage.contains(#"id="timeline""#), "\(runPage.prefix(3000))")
        #expect(runPage.contains(#"data-attempt="1" data-outcome="timedOut""#))
        #expect(runPage.contains(#"data-attempt="2" data-outcome="parked""#))
        #expect(runPage.contains(#"class="bar parked""#))
        #expect(runPage.contains("Timeout"))
        let deadLetterPage = try await Self.browse("http://127.0.0.1:\(port)/console/#/dlq")
        #expect(deadLetterPage.contains(#"data-id="\#(itemId)""#), "\(deadLetterPage.prefix(3000))")
        #expect(deadLetterPage.contains("console-slow"))
        #expect(deadLetterPage.contains(">Redrive</button>"))
        let listPage = try await Self.browse("http://127.0.0.1:\(port)/console/#/runs?status=completed")
        #expect(listPage.contains(">console-ok</a>"))
        #expect(!listPage.contains(">console-slow</a>"))

        // State changes: refused without the token, done with it.
        let anonymous = try await Self.call(port, itemPath + "/discard", method: "POST")
        #expect(anonymous.status == 401)
        #expect(try await Self.call(port, itemPath + "/discard", method: "POST", token: "wrong").status == 401)
        #expect(try await Self.call(port, "/api/runs/console-ok/cancel", method: "POST").status == 401)
        #expect(
            try await deployment.client.describe(workflowId: "console-slow").status == .running,
            "nothing happened without the token")
        let discarded = try await Self.call(port, itemPath + "/discard", method: "POST", token: Self.token)
        #expect(discarded.status == 200, "\(discarded.text)")
        #expect(discarded.json["done"] as? Bool == true)
        #expect(try await deployment.client.waitForResult(workflowId: "console-slow", timeout: 30).status == .failed)
        // A second discard finds nothing: 409 with why.
        let again = try await Self.call(port, itemPath + "/discard", method: "POST", token: Self.token)
        #expect(again.status == 409)
        #expect((again.json["detail"] as? String)?.contains("no such entry") == true)
        // A signal needs a name and JSON; a signal to a closed run is the coordinator's business.
        let nameless = try await Self.call(
            port, "/api/runs/console-ok/signal", method: "POST", token: Self.token, body: #"{"name": ""}"#)
        #expect(nameless.status == 400)
        let garbled = try await Self.call(port, "/api/runs/console-ok/signal", method: "POST", token: Self.token, body: "{name")
        #expect(garbled.status == 400)
    }

    @Test func schedulesAreListedPausedAndTriggeredFromTheConsole() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = ["KEEL_API_TOKEN": Self.token]
        let port = freeLocalPort()
        try deployment.startCoordinator(["--http-port", port])
        try deployment.startWorker()
        try await deployment.waitUntilCoordinatorServes()
        _ = try await deployment.client.createSchedule(
            ScheduleSpec(
                name: "nightly", cron: "0 3 * * *", workflowType: "bench-sequential",
                input: try Payload(encoding: 2, field: "input"), timeZone: "Europe/Paris"))

        let listed = try await Self.call(port, "/api/schedules")
        let schedules = try #require(listed.json["schedules"] as? [[String: Any]], "\(listed.text)")
        #expect(((schedules.first?["schedule"] as? [String: Any])?["spec"] as? [String: Any])?["name"] as? String == "nightly")
        #expect((schedules.first?["upcoming"] as? [Any])?.count == 5)

        #expect(try await Self.call(port, "/api/schedules/nightly/trigger", method: "POST").status == 401)
        let triggered = try await Self.call(port, "/api/schedules/nightly/trigger", method: "POST", token: Self.token)
        #expect(triggered.status == 200, "\(triggered.text)")
        let workflowId = try #require((triggered.json["firing"] as? [String: Any])?["workflowId"] as? String)
        #expect(try await deployment.client.waitForResult(workflowId: workflowId, timeout: 30).status == .completed)
        let paused = try await Self.call(port, "/api/schedules/nightly/pause", method: "POST", token: Self.token)
        #expect(paused.status == 200, "\(paused.text)")
        #expect(try await Self.call(port, "/api/schedules/nope/pause", method: "POST", token: Self.token).status == 422)

        let page = try await Self.browse("http://127.0.0.1:\(port)/console/#/schedules")
        #expect(page.contains(#"data-name="nightly""#), "\(page.prefix(3000))")
        #expect(page.contains("0 3 * * * (Europe/Paris)"))
        #expect(page.contains(">paused</span>"))
        #expect(page.contains(">\(workflowId)</a>"))
        #expect(page.contains(">Unpause</button>"))
    }

    @Test func signalsQueriesAndCancelGoThroughTheAPI() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        deployment.extraEnvironment = ["KEEL_API_TOKEN": Self.token]
        let port = freeLocalPort()
        try deployment.startCoordinator(["--http-port", port])
        // No llm worker: the run waits on its summary, open for queries, signals and a cancel.
        let input = JSONValue.object(["text": .string("A short text."), "approvalTimeoutSeconds": .number(60)])
        _ = try await deployment.client.startAndConfirm(
            StartRequest(
                workflowType: "summary-approval", workflowId: "console-approval",
                input: try Payload(encoding: input, field: "input")))
        var status = Answer(status: 0, body: Data())
        #expect(
            try await eventually(20) {
                status = try await Self.call(port, "/api/runs/console-approval/query/status")
                return status.status == 200
            }, "\(status.text)")
        #expect(status.json["result"] != nil)
        #expect(try await Self.call(port, "/api/runs/console-approval/query/status?argument=%7Bnot-json").status == 400)
        let unknown = try await Self.call(port, "/api/runs/console-approval/query/no-such-query")
        #expect(unknown.status == 422)
        #expect(unknown.json["type"] as? String == "QueryFailed", "\(unknown.text)")
        let signalled = try await Self.call(
            port, "/api/runs/console-approval/signal", method: "POST", token: Self.token,
            body: #"{"name": "approve", "input": {"approver": "ops"}}"#)
        #expect(signalled.status == 200, "\(signalled.text)")
        #expect(
            try await eventually(10) {
                let events = (try await Self.call(port, "/api/runs/console-approval").json["events"] as? [[String: Any]]) ?? []
                return events.contains { $0["kind"] as? String == "signalReceived" && $0["name"] as? String == "approve" }
            })
        #expect(
            try await Self.call(port, "/api/runs/nobody/signal", method: "POST", token: Self.token, body: #"{"name": "approve"}"#)
                .status == 404)
        let cancelled = try await Self.call(port, "/api/runs/console-approval/cancel", method: "POST", token: Self.token)
        #expect(cancelled.status == 200, "\(cancelled.text)")
        #expect(try await deployment.client.waitForResult(workflowId: "console-approval", timeout: 30).status == .cancelled)
    }

    @Test func aCoordinatorReachableFromOtherMachinesNeedsATokenForEverything() async throws {
        let deployment = try Deployment()
        defer { deployment.stopAll() }
        let port = freeLocalPort()
        let refused = try await deployment.keel(["coordinator", "--http-host", "0.0.0.0", "--http-port", port])
        #expect(refused.status != 0)
        #expect(refused.output.contains("set KEEL_API_TOKEN"), "\(refused.output)")

        deployment.extraEnvironment = ["KEEL_API_TOKEN": Self.token]
        try deployment.startCoordinator(["--http-host", "0.0.0.0", "--http-port", port])
        var anonymous = Answer(status: 0, body: Data())
        #expect(
            try await eventually(20) {
                anonymous = (try? await Self.call(port, "/api/runs")) ?? anonymous
                return anonymous.status != 0
            })
        #expect(anonymous.status == 401)
        #expect(try await Self.call(port, "/metrics").status == 401)
        #expect(try await Self.call(port, "/api/runs", token: Self.token).status == 200)
        #expect(try await Self.call(port, "/metrics", token: Self.token).status == 200)
        let page = try await Self.call(port, "/console/")
        #expect(page.status == 200, "the page itself holds no data")
        #expect(page.text.contains("<title>Keel console</title>"))
    }
}
