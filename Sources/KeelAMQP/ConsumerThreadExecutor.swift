import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the jobs of tasks that prefer it on an ``AMQPConsumer``'s own thread, between its reads of
/// the socket. A loop over ``AMQPConsumer/nextBatch()`` that runs here is resumed by the thread that
/// read the batch, without waking a thread of Swift's pool for every batch; and a default actor it
/// calls runs here too while the actor is free (SE-0417). Its jobs must not block for long: the
/// consumer reads nothing while one runs.
///
/// Once the consumer's thread ends, jobs go to the global concurrent executor.
public final class ConsumerThreadExecutor: TaskExecutor {
    private struct State {
        var jobs: [UnownedJob] = []
        var closed = false
    }

    private let state = Mutex(State())
    private let wakeup: Wakeup
    /// The consumer's thread, once it runs.
    private let owner = Mutex<pthread_t?>(nil)

    init(wakeup: Wakeup) { self.wakeup = wakeup }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let accepted = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.jobs.append(job)
            return true
        }
        guard accepted else { return globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        // The thread runs what it enqueues itself before it sleeps again.
        if !isOnOwnThread { wakeup.signal() }
    }

    var isOnOwnThread: Bool {
        guard let owner = owner.withLock({ $0 }) else { return false }
        return pthread_equal(owner, pthread_self()) != 0
    }

    /// Called by the consumer's thread as it starts.
    func adopt() { owner.withLock { $0 = pthread_self() } }

    /// Runs every job enqueued so far, and those they enqueue, on the calling (consumer's) thread.
    func runPending() {
        while true {
            let jobs = state.withLock { state in
                defer { state.jobs.removeAll(keepingCapacity: true) }
                return state.jobs
            }
            if jobs.isEmpty { return }
            for job in jobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
    }

    /// The consumer's thread ends: what is queued, and every later job, goes to the global
    /// concurrent executor.
    func close() {
        let jobs = state.withLock { state in
            state.closed = true
            defer { state.jobs.removeAll() }
            return state.jobs
        }
        for job in jobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}
