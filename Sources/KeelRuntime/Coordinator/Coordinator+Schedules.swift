import Foundation
import KeelCore
import Logging

// Schedules: durable, in the history database; each firing starts a run with an id derived from
// its time, in the same transaction that moves the schedule on, so that no firing starts twice.
extension Coordinator {
    /// A schedule that does not exist.
    public struct ScheduleNotFoundError: KeelError {
        public var name: String
        public var errorType: String { "ScheduleNotFound" }
        public var message: String { "no schedule named \(name)" }
        public var isNonRetryable: Bool { true }
    }

    /// Creates a schedule; throws what is wrong with it (nothing is stored then).
    @discardableResult
    public func createSchedule(_ spec: ScheduleSpec) async throws -> ScheduleRecord {
        try spec.validate()
        do {
            _ = try workflows.definition(named: spec.workflowType)
        } catch let error as UnknownTypeError {
            throw ScheduleError(error.message)
        }
        try configuration.limits.check(
            StartJob(
                StartRequest(workflowType: spec.workflowType, workflowId: spec.workflowId(at: clock.now()), input: spec.input)))
        guard schedules[spec.name] == nil else {
            throw ScheduleError("a schedule named \(spec.name) exists; delete it first to replace it")
        }
        var work = Work(now: clock.now())
        let record = ScheduleRecord(spec: spec, createdAt: work.now)
        save(record, &work)
        try await finish(&work)
        logger.info("schedule \(spec.name) created: \(spec.cron ?? "every \(spec.every ?? 0) s"), starts \(spec.workflowType)")
        return record
    }

    public func schedule(named name: String) throws -> ScheduleRecord {
        guard let record = schedules[name] else { throw ScheduleNotFoundError(name: name) }
        return record
    }

    public func allSchedules() -> [ScheduleRecord] { schedules.values.sorted { $0.spec.name < $1.spec.name } }

    /// Stops the firings (missed ones are not caught up on unpause).
    public func pauseSchedule(_ name: String, note: String?) async throws -> ScheduleRecord {
        try await changeSchedule(name) { record, _ in
            record.paused = true
            record.note = note
            record.nextFireAt = nil
            return record
        }
    }

    /// Fires again from the next time after now.
    public func unpauseSchedule(_ name: String) async throws -> ScheduleRecord {
        try await changeSchedule(name) { record, work in
            record.paused = false
            record.note = nil
            record.nextFireAt = record.spec.next(after: work.now)
            return record
        }
    }

    /// One firing now, under the schedule's overlap policy (paused or not).
    public func triggerSchedule(_ name: String) async throws -> ScheduleFiring {
        try await changeSchedule(name) { record, work in
            var byRequestId: [String: StartResult] = [:]
            return fire(&record, at: work.now, triggered: true, &byRequestId, &work)
        }
    }

    /// Reads schedule `name`, lets `change` change it (and add to the unit of work), saves and
    /// commits it; returns what `change` returned.
    private func changeSchedule<T>(
        _ name: String, _ change: (inout ScheduleRecord, inout Work) -> T
    ) async throws -> T {
        var record = try schedule(named: name)
        var work = Work(now: clock.now())
        let answer = change(&record, &work)
        save(record, &work)
        try await finish(&work)
        return answer
    }

    public func deleteSchedule(_ name: String) async throws {
        _ = try schedule(named: name)
        var work = Work(now: clock.now())
        schedules[name] = nil
        work.batch.deletedSchedules.append(name)
        try await finish(&work)
    }

    /// Fires what is due: buffered firings whose run has closed, then every firing up to now —
    /// each once, those older than the catch-up window skipped and counted. Returns the firings.
    @discardableResult
    public func fireDueSchedules() async throws -> [ScheduleFiring] {
        let now = clock.now()
        let due = schedules.values.filter { record in
            !record.paused
                && ((record.nextFireAt.map { $0 <= now } ?? false) || (record.buffered != nil && !isOpen(record.lastWorkflowId)))
        }
        guard !due.isEmpty else { return [] }
        var work = Work(now: now)
        var byRequestId: [String: StartResult] = [:]
        var firings: [ScheduleFiring] = []
        for var record in due {
            if let buffered = record.buffered, !isOpen(record.lastWorkflowId) {
                record.buffered = nil
                firings.append(start(&record, at: buffered, triggered: false, &byRequestId, &work))
            }
            var missed = 0
            while let time = record.nextFireAt, time <= now {
                if now.timeIntervalSince(time) > record.spec.catchup {
                    // Too old: skip to the first firing inside the window, counting what is passed.
                    missed += 1
                    record.nextFireAt = record.spec.next(after: time)
                    if missed >= 10_000, let jump = record.spec.next(after: now.addingTimeInterval(-record.spec.catchup)) {
                        record.nextFireAt = jump
                    }
                    continue
                }
                record.nextFireAt = record.spec.next(after: time)
                firings.append(fire(&record, at: time, triggered: false, &byRequestId, &work))
            }
            if missed > 0 {
                record.missed += missed
                record.note(
                    ScheduleFiring(time: now, outcome: .missed, error: "\(missed) firing(s) older than the catch-up window"))
                logger.warning(
                    "schedule \(record.spec.name): \(missed) firing(s) missed by more than the catch-up window (\(Int(record.spec.catchup)) s) skipped"
                )
            }
            save(record, &work)
        }
        try await finish(&work)
        return firings
    }

    private func isOpen(_ workflowId: String?) -> Bool {
        guard let workflowId else { return false }
        return openRunByWorkflowId[workflowId] != nil
    }

    /// A firing at `time` under the overlap policy.
    private func fire(
        _ record: inout ScheduleRecord, at time: Date, triggered: Bool, _ byRequestId: inout [String: StartResult],
        _ work: inout Work
    ) -> ScheduleFiring {
        guard isOpen(record.lastWorkflowId) else { return start(&record, at: time, triggered: triggered, &byRequestId, &work) }
        switch record.spec.overlapPolicy {
        case .allowAll:
            return start(&record, at: time, triggered: triggered, &byRequestId, &work)
        case .bufferOne where record.buffered == nil:
            record.buffered = time
            let firing = ScheduleFiring(time: time, outcome: .buffered, triggered: triggered)
            record.note(firing)
            return firing
        case .skip, .bufferOne:
            record.skippedOverlap += 1
            let firing = ScheduleFiring(
                time: time, outcome: .skippedOverlap, workflowId: record.lastWorkflowId, triggered: triggered)
            record.note(firing)
            return firing
        }
    }

    private func start(
        _ record: inout ScheduleRecord, at time: Date, triggered: Bool, _ byRequestId: inout [String: StartResult],
        _ work: inout Work
    ) -> ScheduleFiring {
        let spec = record.spec
        var options = spec.options ?? WorkflowOptions()
        // The firing's own id: a second start of it (after a crash) joins the first.
        options.idConflictPolicy = .useExisting
        options.idReusePolicy = .allowDuplicate
        let request = StartRequest(
            workflowType: spec.workflowType, workflowId: spec.workflowId(at: time), input: spec.input, options: options,
            requestId: spec.requestId(at: time))
        let firing: ScheduleFiring
        do {
            let committed = try store.startLookups(
                requestIds: [request.requestId].compactMap { $0 }, workflowIds: [request.workflowId])
            let result = try start(request, byRequestId: &byRequestId, committed: committed, &work)
            record.started += 1
            record.lastWorkflowId = result.workflowId
            firing = ScheduleFiring(
                time: time, outcome: .started, workflowId: result.workflowId, triggered: triggered)
        } catch {
            logger.warning("schedule \(spec.name): the firing of \(ScheduleSpec.stamp(time)) could not start: \(error)")
            firing = ScheduleFiring(
                time: time, outcome: .failed, workflowId: request.workflowId, triggered: triggered,
                error: "\(error)")
        }
        record.note(firing)
        return firing
    }

    private func save(_ record: ScheduleRecord, _ work: inout Work) {
        schedules[record.spec.name] = record
        work.batch.schedules.append(record)
    }
}
