import Foundation
import KeelAMQP
import Logging
import Metrics
import Synchronization

/// A task queue as the monitor last saw it.
public struct QueueSample: Codable, Sendable, Hashable {
    /// The task queue name workflows use (`llm`).
    public var taskQueue: String
    /// The RabbitMQ queue behind it (`keel.q.llm`).
    public var queue: String
    /// Ready tasks waiting for a worker.
    public var messages: Int
    public var consumers: Int
    /// Attempts running on it (started, not ended), as the coordinator knows them: with tasks
    /// waiting and no consumer, its workers are all busy, not gone.
    public var running: Int
    /// Tasks the coordinator published to it per second, over the last check interval.
    public var dispatchedPerSecond: Double
    /// Tasks published to it since the coordinator started.
    public var dispatched: Int
    /// Since when it has held tasks with no consumer and no attempt running (nil: it has one, or
    /// is empty).
    public var starvingSince: Date?
    /// Whether it has been starving long enough to be reported.
    public var stalled: Bool
    public var sampledAt: Date
}

/// Watches the task queues from a thread of its own: depth and consumers as metrics
/// (`keel_queue_messages`, `keel_queue_consumers`), and a task queue that holds tasks with no
/// consumer for too long is flagged (`keel_queue_stalled`, one log line naming the queue and the
/// command that serves it), unless attempts run on it: its workers are then busy, each with
/// every slot taken by a long activity (they stop consuming then, ``ActivitySlots``).
public final class QueueMonitor: Sendable {
    private let url: AMQPURL
    private let topology: Topology
    private let interval: Double
    private let noConsumerAfter: Double
    private let logger: Logger
    /// Kept up to date by the coordinator.
    let startedAttempts = StartedAttempts()
    private let known: Mutex<Set<String>>
    /// Tasks published per task queue since start.
    private let dispatchCounts = Mutex([String: Int]())
    private let samples = Mutex([String: QueueSample]())
    private let stopped = Mutex(false)
    /// Ends the wait between two looks at once when the monitor stops.
    private let wakeup = Wakeup()
    private let finished = DispatchSemaphore(value: 0)

    init(url: AMQPURL, topology: Topology, interval: Double, noConsumerAfter: Double, logger: Logger) {
        self.url = url
        self.topology = topology
        self.interval = interval
        self.noConsumerAfter = noConsumerAfter
        self.logger = logger
        known = Mutex(Set(Topology.standardTaskQueues))
    }

    /// Counts tasks published to each task queue, and watches queues a workflow named.
    func countDispatched(_ counts: [String: Int]) {
        known.withLock { $0.formUnion(counts.keys) }
        dispatchCounts.withLock { $0.merge(counts, uniquingKeysWith: +) }
        for (taskQueue, count) in counts {
            Counter(label: "keel_tasks_dispatched_total", dimensions: [("task_queue", taskQueue)]).increment(by: Int64(count))
        }
    }

    /// The last sample of every watched queue, by task queue name.
    public var latest: [QueueSample] { samples.withLock { Array($0.values) }.sorted { $0.taskQueue < $1.taskQueue } }

    func start() {
        stopped.withLock { $0 = false }
        Thread.detachNewThread { [self] in
            defer { finished.signal() }
            var connection: AMQPConnection?
            var emptySince: [String: Date] = [:]
            var flagged: Set<String> = []
            var previous: [String: (count: Int, at: Date)] = [:]
            while !stopped.withLock({ $0 }) {
                for taskQueue in known.withLock({ $0 }).sorted() {
                    let queue = topology.queue(forTaskQueue: taskQueue)
                    do {
                        if connection == nil { connection = try AMQPConnection(url: url) }
                        let (messages, consumers) = try connection!.inspect(queue: queue)
                        Gauge(label: "keel_queue_messages", dimensions: [("task_queue", taskQueue)]).record(Double(messages))
                        Gauge(label: "keel_queue_consumers", dimensions: [("task_queue", taskQueue)]).record(Double(consumers))
                        let running = startedAttempts.count(taskQueue: taskQueue)
                        let starving = messages > 0 && consumers == 0 && running == 0
                        if starving {
                            let since = emptySince[taskQueue] ?? Date()
                            emptySince[taskQueue] = since
                            if Date().timeIntervalSince(since) >= noConsumerAfter, flagged.insert(taskQueue).inserted {
                                logger.warning(
                                    "task queue \(taskQueue) (\(queue)) has \(messages) task(s) and no consumer for \(Int(noConsumerAfter)) s: start a worker with `keel worker --queue \(taskQueue)`"
                                )
                            }
                        } else {
                            emptySince[taskQueue] = nil
                            if flagged.remove(taskQueue) != nil { logger.info("task queue \(taskQueue) has a consumer again") }
                        }
                        Gauge(label: "keel_queue_stalled", dimensions: [("task_queue", taskQueue)]).record(
                            flagged.contains(taskQueue) ? 1 : 0)
                        let now = Date()
                        let count = dispatchCounts.withLock { $0[taskQueue] ?? 0 }
                        let rate =
                            previous[taskQueue].map { Double(count - $0.count) / max(now.timeIntervalSince($0.at), 0.001) } ?? 0
                        previous[taskQueue] = (count, now)
                        let sample = QueueSample(
                            taskQueue: taskQueue, queue: queue, messages: messages, consumers: consumers, running: running,
                            dispatchedPerSecond: rate,
                            dispatched: count, starvingSince: emptySince[taskQueue], stalled: flagged.contains(taskQueue),
                            sampledAt: now)
                        samples.withLock { $0[taskQueue] = sample }
                    } catch {
                        // A queue not declared yet closes the channel: reconnect on the next pass.
                        connection?.close()
                        connection = nil
                    }
                }
                if !stopped.withLock({ $0 }) { wakeup.sleep(socket: nil, timeout: interval) }
            }
            connection?.close()
        }
    }

    /// Stops the thread and waits for it (off the cooperative pool).
    func stop() async {
        stopped.withLock { $0 = true }
        wakeup.signal()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { [finished] in
                finished.wait()
                continuation.resume()
            }
        }
    }
}
