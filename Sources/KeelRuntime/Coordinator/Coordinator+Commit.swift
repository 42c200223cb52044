import Foundation
import KeelAMQP
import KeelCore
import Logging

// Committing a unit of work, then publishing what it produced (transactional outbox).
extension Coordinator {
    /// Publishes tasks and dead-letter entries left in their outboxes (after a crash or a failed
    /// publish). With `holdingUntil`, the tasks wait until then instead (``recover()``). Returns
    /// how many it sent or holds.
    @discardableResult
    public func flushOutbox(holdingUntil: Date? = nil) async throws -> Int {
        // Failed publishes rejoin the outbox and confirmed rows go before it is read.
        deleteConfirmedOutbox()
        let skip = publishing
        var stale = StoreBatch()
        var held = 0
        let now = clock.now()
        // A held task whose row went another way (its attempt sent again, confirmed and deleted)
        // is forgotten a minute after it was due.
        heldTasks = heldTasks.filter { $0.value > now.addingTimeInterval(-60) }
        // Those being published now are left alone (and not even decoded).
        var tasks = try store.outbox(skipping: skip).filter { task in
            // Only an attempt still waiting for a worker needs its task; one that started (or a
            // closed run) was delivered already, and sending it again would run it twice.
            guard let activity = runs[task.runId]?.activities[task.activityId], activity.attempt == task.attempt,
                activity.state == .scheduled
            else {
                stale.deletedOutbox.append(task.attemptKey)
                heldTasks.removeValue(forKey: task.attemptKey)
                return false
            }
            if let notBefore = heldTasks[task.attemptKey] {
                if notBefore > now { return false }
                heldTasks.removeValue(forKey: task.attemptKey)
            }
            if let holdingUntil {
                heldTasks[task.attemptKey] = holdingUntil
                held += 1
                return false
            }
            return true
        }
        // The first copy of each may have gone out before the crash (or the failed publish):
        // workers claim these before running them.
        for index in tasks.indices { tasks[index].republished = true }
        let deadLetters = try store.deadLetterOutbox(skipping: skip)
        try store.commit(stale)
        guard !tasks.isEmpty || !deadLetters.isEmpty else { return held }
        let outgoing = Outgoing(tasks: tasks, deadLetters: deadLetters)
        publishing.formUnion(outgoing.keys)
        return held + (await publish(outgoing) ? tasks.count + deadLetters.count : 0)
    }

    /// Commits the work, wakes waiters of closed runs, then publishes the new tasks.
    func finish(_ work: inout Work) async throws {
        await publish(try commit(&work))
    }

    /// Commits the work and wakes waiters of closed runs. With `work.sendsDuringCommit`, the
    /// tasks are written to the broker before the transaction is, so that the next step's task
    /// travels while its commit is written (docs/architecture.md, "The next task goes out while
    /// the step is committed").
    func commit(_ work: inout Work) throws -> Outgoing {
        admitWaiting(&work)
        persistCapacity(&work)
        // A coordinator that stopped before committing these reports may have sent these
        // attempts' tasks: this copy waits (``redeliveredTaskDelay``), then ``flushOutbox()``
        // sends it marked `republished`, to be claimed, unless that first copy reported its
        // start or result meanwhile.
        let held = work.fromRedelivered ? work.batch.outbox.map(\.attemptKey) : []
        if !held.isEmpty { work.sendsDuringCommit = false }
        for run in work.touched.values { work.batch.runs.append(run.record) }
        work.batch.circuitBreakers = breakerChanges.pending.withLock { changes in
            defer { changes.removeAll() }
            return changes
        }
        let confirmed = takeConfirmedOutbox(keeping: work.batch.outbox)
        work.batch.deletedOutbox += confirmed.deletedOutbox
        work.batch.deletedDeadLetters += confirmed.deletedDeadLetters
        // Only tasks alone (cancels go first, dead letters after the tasks' confirms), each
        // decided by the reports of this commit (``admitWaiting(_:)`` clears the flag): should the
        // coordinator stop before the commit ends, RabbitMQ delivers those reports again to the
        // next coordinator, which decides the same attempts again, holds its copies, then has
        // them claimed (``Work/fromRedelivered``).
        var sent: PublishConfirmation?
        if work.sendsDuringCommit, !work.batch.outbox.isEmpty, work.batch.deadLetters.isEmpty, work.cancels.isEmpty {
            sent = publisher.sendAtOnce(work.batch.outbox)
        }
        do {
            try store.commit(work.batch)
        } catch {
            restoreConfirmedOutbox(confirmed)
            throw error
        }
        forgetPublished(confirmed)
        for record in work.closed where record.status != .continuedAsNew {
            for waiter in completionWaiters.removeValue(forKey: record.workflowId) ?? [] {
                waiter.resume(returning: record)
            }
        }
        let notBefore = work.now.addingTimeInterval(Self.redeliveredTaskDelay)
        for key in held { heldTasks[key] = notBefore }
        // Not being published by this commit: ``flushOutbox()`` takes their rows once due (an
        // earlier publish of the same attempt left its key here).
        publishing.subtract(held)
        let outgoing = Outgoing(
            tasks: held.isEmpty ? work.batch.outbox : [], deadLetters: work.batch.deadLetters, cancels: work.cancels,
            sent: sent)
        publishing.formUnion(outgoing.keys)
        return outgoing
    }

    /// Publishes what a commit produced, then deletes those outbox rows. On failure they stay,
    /// and ``flushOutbox()`` publishes them later.
    @discardableResult
    public func publish(_ outgoing: Outgoing) async -> Bool {
        await send(outgoing).settle()
    }

    /// Starts publishing what a commit produced: the cancels (awaited), then the tasks, written
    /// to the broker before this returns when its connection is free, so that the caller applies
    /// the next batch while their confirms come. ``Sending/settle()`` does the rest.
    public func send(_ outgoing: Outgoing) async -> Sending {
        if !outgoing.cancels.isEmpty {
            do { try await publisher.cancel(outgoing.cancels) } catch {
                logger.warning(
                    "telling workers to stop \(outgoing.cancels.count) attempt(s) failed (their heartbeats ask again): \(error)")
            }
        }
        guard !outgoing.tasks.isEmpty else { return Sending(outgoing: outgoing, tasks: nil, coordinator: self) }
        if let sent = outgoing.sent { return Sending(outgoing: outgoing, tasks: sent, coordinator: self) }
        let confirmation: PublishConfirmation
        do {
            confirmation = try await publisher.send(outgoing.tasks)
        } catch {
            confirmation = PublishConfirmation(settled: error)
        }
        return Sending(outgoing: outgoing, tasks: confirmation, coordinator: self)
    }

    /// A publish ``send(_:)`` started.
    public struct Sending: Sendable {
        let outgoing: Outgoing
        /// The tasks' confirmation (nil: there are none).
        let tasks: PublishConfirmation?
        let coordinator: Coordinator

        /// Leaves the outcome to the next commit once RabbitMQ settled the tasks, without a task
        /// waiting for the confirm (one less thread woken per publish). Returns false, changing
        /// nothing, when there are dead letters to publish after the confirm: the caller then
        /// uses ``settle()``.
        public func settleInBackground() -> Bool {
            guard outgoing.deadLetters.isEmpty else { return false }
            tasks?.onSettle { [outgoing, coordinator] error in coordinator.settled(outgoing, error) }
            return true
        }

        /// Waits for the tasks' confirms, publishes the dead letters, then leaves the outcome to
        /// the next commit. Returns false if something could not be published: its rows stay,
        /// for ``Coordinator/flushOutbox()``.
        public func settle() async -> Bool {
            guard !outgoing.tasks.isEmpty || !outgoing.deadLetters.isEmpty else { return true }
            var failure: (any Error)?
            do {
                try await tasks?.wait()
                if !outgoing.deadLetters.isEmpty { try await coordinator.publisher.deadLetter(outgoing.deadLetters) }
            } catch {
                failure = error
            }
            coordinator.settled(outgoing, failure)
            return failure == nil
        }
    }

    /// Records how a publish ended, from any thread: a confirmed one's outbox rows go with the
    /// next commit, a failed one's stay for ``flushOutbox()``.
    nonisolated func settled(_ outgoing: Outgoing, _ error: (any Error)?) {
        settledPublishes.withLock { settled in
            if let error {
                settled.failed.append((outgoing, error))
            } else {
                settled.confirmed.deletedOutbox += outgoing.tasks.map(\.attemptKey)
                settled.confirmed.deletedDeadLetters += outgoing.deadLetters.map(\.id)
            }
        }
    }

    /// Deletes the confirmed outbox rows no commit took along (the timers' loop calls it every
    /// 50 ms at most, and shutdown).
    public func deleteConfirmedOutbox() {
        let confirmed = takeConfirmedOutbox(keeping: [])
        guard !confirmed.isEmpty else { return }
        do {
            try store.commit(confirmed)
            forgetPublished(confirmed)
        } catch {
            restoreConfirmedOutbox(confirmed)
            logger.warning(
                "deleting the outbox rows of \(confirmed.deletedOutbox.count + confirmed.deletedDeadLetters.count) published message(s) failed: \(error)"
            )
        }
    }

    /// Takes in the settled publishes: the failed ones rejoin the outbox, and the confirmed rows
    /// are returned to be deleted now. A row the commit writes again (the same attempt sent once
    /// more) is not: its new publish deletes it once confirmed.
    private func takeConfirmedOutbox(keeping rewritten: [ActivityTask]) -> StoreBatch {
        let settled = settledPublishes.withLock { settled in
            defer { settled = SettledPublishes() }
            return settled
        }
        for (outgoing, error) in settled.failed { unpublished(outgoing, error) }
        var confirmed = settled.confirmed
        if !rewritten.isEmpty, !confirmed.deletedOutbox.isEmpty {
            let keys = Set(rewritten.map(\.attemptKey))
            confirmed.deletedOutbox.removeAll { keys.contains($0) }
        }
        return confirmed
    }

    private func restoreConfirmedOutbox(_ confirmed: StoreBatch) {
        settledPublishes.withLock { settled in
            settled.confirmed.deletedOutbox += confirmed.deletedOutbox
            settled.confirmed.deletedDeadLetters += confirmed.deletedDeadLetters
        }
    }

    private func forgetPublished(_ deleted: StoreBatch) {
        publishing.subtract(deleted.deletedOutbox)
        publishing.subtract(deleted.deletedDeadLetters)
    }

    func unpublished(_ outgoing: Outgoing, _ error: any Error) {
        publishing.subtract(outgoing.keys)
        logger.warning(
            "publishing \(outgoing.tasks.count) task(s) and \(outgoing.deadLetters.count) dead letter(s) failed, kept in the outbox: \(error)"
        )
    }
}
