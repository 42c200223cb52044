import DequeModule
import Synchronization

/// Runs one workflow's jobs inline, on the caller's thread, in a deterministic order.
///
/// The workflow's root task and all its child tasks (`async let`, task groups) prefer this
/// executor, so nothing of the workflow runs until the driver calls ``runUntilIdle()``. The order
/// does not depend on how the Swift runtime splits a task into jobs: the executor keeps running
/// jobs of the task it ran last, and only when that task truly suspends does it take the oldest
/// job of another task. Replaying the same events therefore runs the same code in the same order.
final class DeterministicExecutor: TaskExecutor, SerialExecutor {
    private let jobs = Mutex(Deque<(task: UInt64, job: UnownedJob)>())

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let task = taskIdentifier(of: job)
        jobs.withLock { $0.append((task, job)) }
    }

    /// Runs jobs until every task of the workflow is suspended or finished.
    func runUntilIdle() {
        var current: UInt64?
        while true {
            let next: (task: UInt64, job: UnownedJob)? = jobs.withLock { queue in
                if let current, let index = queue.firstIndex(where: { $0.task == current }) {
                    return queue.remove(at: index)
                }
                return queue.popFirst()
            }
            guard let next else { return }
            current = next.task
            next.job.runSynchronously(
                isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        }
    }
}

// The Swift runtime's identifier of the task a job belongs to; the only stable way to tell
// jobs of different tasks apart.
@_silgen_name("swift_task_getJobTaskId")
private func taskIdentifier(of job: UnownedJob) -> UInt64
