import Foundation
import KeelCore
import Logging

// Jobs from clients: starts (with the id and request-id policies), signals, cancels, terminations, queries.
extension Coordinator {
    /// Starts a run, following the id conflict and reuse policies. A start with a request id that
    /// already made a run returns that run.
    public func start(_ request: StartRequest) async throws -> StartResult {
        try await start([request])[0].get()
    }

    /// Starts many runs in one transaction (group commit). Each request succeeds or fails on its
    /// own; a failed commit throws for all.
    public func start(_ requests: [StartRequest]) async throws -> [Result<StartResult, any Error>] {
        let (results, outgoing) = try commitStarts(requests)
        await publish(outgoing)
        return results
    }

    /// Like ``start(_:)-([StartRequest])``, but returns once committed; the caller publishes the
    /// outcome with ``publish(_:)``.
    public func commitStarts(_ requests: [StartRequest]) throws -> ([Result<StartResult, any Error>], Outgoing) {
        var work = Work(now: clock.now())
        var byRequestId: [String: StartResult] = [:]
        // The committed runs the batch checks, in one read instead of one or two per start (a
        // read transaction each: 3 % of the coordinator's CPU in `bench throughput`). Nothing
        // commits before the batch does, so they are what a read per start would find.
        let committed = try store.startLookups(
            requestIds: requests.compactMap(\.requestId), workflowIds: requests.map(\.workflowId))
        var results: [Result<StartResult, any Error>] = []
        for request in requests {
            do {
                results.append(.success(try start(request, byRequestId: &byRequestId, committed: committed, &work)))
            } catch {
                results.append(.failure(error))
            }
        }
        return (results, try commit(&work))
    }

    /// Starts `request` unless its request id already started a run (one of `committed`'s, or
    /// one of `byRequestId` in this batch) or its id conflicts with an open run or the last
    /// committed one, as its policies say. `committed` holds the committed runs of its ids.
    func start(
        _ request: StartRequest, byRequestId: inout [String: StartResult], committed: StartLookups, _ work: inout Work
    ) throws -> StartResult {
        // Ids, names, input and options, before anything else looks at them (an empty id too).
        try configuration.limits.check(StartJob(request))
        let definition = try workflows.definition(named: request.workflowType)
        if let requestId = request.requestId {
            if let earlier = byRequestId[requestId] {
                return StartResult(workflowId: earlier.workflowId, runId: earlier.runId, started: false)
            }
            if let existing = committed.runsByRequestId[requestId] {
                return StartResult(workflowId: existing.workflowId, runId: existing.runId, started: false)
            }
        }
        if let openId = openRunByWorkflowId[request.workflowId], let open = runs[openId] {
            switch request.options.idConflictPolicy {
            case .fail:
                throw WorkflowAlreadyStartedError(
                    workflowId: request.workflowId, runId: openId, status: open.record.status,
                    policy: "idConflictPolicy fail")
            case .useExisting:
                return StartResult(workflowId: request.workflowId, runId: openId, started: false)
            case .terminateExisting:
                terminate(open, reason: "terminated by a new start (idConflictPolicy terminateExisting)", &work)
            }
        } else if let last = committed.latestRunsByWorkflowId[request.workflowId] {
            switch request.options.idReusePolicy {
            case .allowDuplicate:
                break
            case .allowDuplicateFailedOnly where last.status != .completed:
                break
            case .allowDuplicateFailedOnly, .rejectDuplicate:
                throw WorkflowAlreadyStartedError(
                    workflowId: request.workflowId, runId: last.runId, status: last.status,
                    policy: "idReusePolicy \(request.options.idReusePolicy.rawValue)")
            }
        }
        let run = startRun(
            definition, workflowId: request.workflowId, input: request.input, options: request.options,
            requestId: request.requestId, parent: nil, continuedFrom: nil,
            blockedBy: quarantine(workflowId: request.workflowId), &work)
        let result = StartResult(workflowId: run.record.workflowId, runId: run.runId, started: true)
        if let requestId = request.requestId { byRequestId[requestId] = result }
        return result
    }

    /// Delivers a signal to the open run of `workflowId`.
    public func signal(workflowId: String, name: String, input: Payload = .null) async throws {
        try configuration.limits.check(WorkflowJob(workflowId: workflowId, name: name, input: input), .signal)
        let run = try openRun(workflowId, for: "signal")
        var work = Work(now: clock.now())
        apply(HistoryEvent(id: 0, time: work.now, kind: .signalReceived, name: name, payload: input), to: run, &work)
        try await finish(&work)
    }

    /// Asks the open run of `workflowId` to cancel: its pending awaits throw `CancelledError`.
    public func cancel(workflowId: String) async throws {
        let run = try openRun(workflowId, for: "cancel")
        var work = Work(now: clock.now())
        apply(HistoryEvent(id: 0, time: work.now, kind: .cancelRequested), to: run, &work)
        try await finish(&work)
    }

    /// Ends the open run of `workflowId` at once, without running any more of its code.
    public func terminate(workflowId: String, reason: String) async throws {
        let run = try openRun(workflowId, for: "terminate")
        var work = Work(now: clock.now())
        terminate(run, reason: reason, &work)
        try await finish(&work)
    }

    /// Answers a query from the run's current state; a closed run is replayed to answer.
    public func query(workflowId: String, name: String, argument: Payload? = nil) async throws -> Payload {
        if let runId = openRunByWorkflowId[workflowId], let run = runs[runId], let instance = run.instance {
            return try guarded(run) { try instance.query(name, argument: argument) }
        }
        guard let record = try store.latestRun(workflowId: workflowId) else {
            throw WorkflowNotFoundError(workflowId: workflowId, detail: "no run with this id")
        }
        if record.status == .blocked {
            throw WorkflowNotFoundError(
                workflowId: workflowId,
                detail:
                    "cannot query: run \(record.runId) is blocked (\(record.failure?.message ?? "")); `keel unblock` replays it")
        }
        let instance = makeInstance(record, try workflows.definition(named: record.workflowType))
        let events = try store.events(runId: record.runId)
        let marker = self.marker
        func code<T>(_ body: () throws -> T) rethrows -> T {
            try marker?.around(workflowId: record.workflowId, runId: record.runId, lastEventId: record.historyLength, body)
                ?? body()
        }
        defer { code { instance.evict() } }
        _ = code { instance.replay(events) }
        return try code { try instance.query(name, argument: argument) }
    }

    /// Waits until the workflow's last run closes (following continue-as-new) and returns it.
    public func result(workflowId: String) async throws -> RunRecord {
        guard let latest = try store.latestRun(workflowId: workflowId) else {
            throw WorkflowNotFoundError(workflowId: workflowId, detail: "no run with this id")
        }
        if !latest.status.isOpen, latest.status != .continuedAsNew { return latest }
        return await withCheckedContinuation { continuation in
            completionWaiters[workflowId, default: []].append(continuation)
        }
    }

    func openRun(_ workflowId: String, for action: String) throws -> LiveRun {
        if let runId = openRunByWorkflowId[workflowId], let run = runs[runId] { return run }
        if let last = try store.latestRun(workflowId: workflowId) {
            throw WorkflowNotFoundError(
                workflowId: workflowId, detail: "cannot \(action): its last run \(last.runId) is \(last.status.rawValue)")
        }
        throw WorkflowNotFoundError(workflowId: workflowId, detail: "cannot \(action): no run with this id")
    }
}
