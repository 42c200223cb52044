import Foundation
import KeelCore
import KeelRuntime
import Synchronization

/// Workers in the test process: take tasks from an ``InMemoryBroker``, run them with the real
/// ``ActivityRunner``, and count every execution.
///
/// Their reports (started, heartbeat, result) go into a queue that, like a durable broker queue,
/// outlives coordinators: a report is removed only once a coordinator has processed (committed)
/// it, so a coordinator that crashes mid-report gets it again after its restart.
public final class InProcessWorkers: Sendable {
    public let broker: InMemoryBroker
    public let runner: ActivityRunner
    private let executions = Mutex([String: Int]())
    private let reports = Mutex([Report]())

    enum Report: Sendable {
        case started(ActivityStarted)
        case heartbeat(ActivityHeartbeat)
        case result(ActivityResult)
    }

    public init(broker: InMemoryBroker, activities: ActivityRegistry, identity: String = "test-worker") {
        self.broker = broker
        self.runner = ActivityRunner(activities: activities, identity: identity)
    }

    /// How many times each activity ran, keyed `workflowId/runId/activityId`.
    public var executionCounts: [String: Int] { executions.withLock { $0 } }

    /// How many times any activity of `workflowId` ran.
    public func executions(ofWorkflow workflowId: String) -> Int {
        executions.withLock { $0.filter { $0.key.hasPrefix(workflowId + "/") }.values.reduce(0, +) }
    }

    /// Runs one waiting task to its end, queueing its reports. Returns false when no task waits.
    @discardableResult
    public func runOne(queue: String? = nil) async -> Bool {
        guard let task = broker.take(queue: queue) else { return false }
        await run(task)
        return true
    }

    /// Runs `task` and queues its start, heartbeats and result.
    public func run(_ task: ActivityTask) async {
        enqueue(
            .started(
                ActivityStarted(
                    runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: runner.identity,
                    time: Date())))
        executions.withLock { $0["\(task.workflowId)/\(task.runId)/\(task.activityId)", default: 0] += 1 }
        let outcome = await runner.run(task) { [self] details in
            enqueue(
                .heartbeat(
                    ActivityHeartbeat(
                        runId: task.runId, activityId: task.activityId, attempt: task.attempt, details: details)))
        }
        enqueue(
            .result(
                ActivityResult(
                    runId: task.runId, activityId: task.activityId, attempt: task.attempt, worker: runner.identity,
                    outcome: outcome)))
    }

    private func enqueue(_ report: Report) {
        reports.withLock { $0.append(report) }
    }

    /// Delivers queued reports in order; each is removed only after the coordinator processed
    /// it. Returns how many were delivered; rethrows the coordinator's failure.
    @discardableResult
    public func deliverReports(to coordinator: Coordinator) async throws -> Int {
        var delivered = 0
        while let report = reports.withLock({ $0.first }) {
            switch report {
            case .started(let message): try await coordinator.activityStarted(message)
            case .heartbeat(let message): try await coordinator.activityHeartbeat(message)
            case .result(let message): try await coordinator.activityResult(message)
            }
            reports.withLock { _ = $0.removeFirst() }
            delivered += 1
        }
        return delivered
    }

    /// Runs tasks, delivers reports and fires due timers until nothing is left to do at the
    /// clock's current time.
    public func drain(_ coordinator: Coordinator) async throws {
        while true {
            var progressed = try await deliverReports(to: coordinator) > 0
            while await runOne() {
                progressed = true
                try await deliverReports(to: coordinator)
            }
            if try await coordinator.fireDueTimers() > 0 { progressed = true }
            if !progressed {
                await coordinator.deleteConfirmedOutbox()
                return
            }
        }
    }

    /// Like ``drain(_:)``, and moves `clock` to each next timer until no timer is left or
    /// `done` returns true.
    public func drain(
        _ coordinator: Coordinator, advancing clock: ManualClock,
        until done: @Sendable () async throws -> Bool = { false }
    ) async throws {
        while true {
            try await drain(coordinator)
            if try await done() { return }
            guard let next = try await coordinator.nextTimerDeadline() else { return }
            clock.set(next)
        }
    }
}
