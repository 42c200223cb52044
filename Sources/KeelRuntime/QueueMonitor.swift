import Foundation
import KeelAMQP
import Logging
import Metrics
import Synchronization

/// Watches the task queues from a thread of its own: depth and consumers as metrics
/// (`keel_queue_messages`, `keel_queue_consumers`), and a task queue that holds tasks with no
/// consumer for too long is flagged (`keel_queue_stalled`, one log line naming the queue and the
/// command that serves it).
final class QueueMonitor: Sendable {
    private let url: AMQPURL
    private let topology: Topology
    private let interval: Double
    private let noConsumerAfter: Double
    private let logger: Logger
    private let known: Mutex<Set<String>>
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)

    init(url: AMQPURL, topology: Topology, interval: Double, noConsumerAfter: Double, logger: Logger) {
        self.url = url
        self.topology = topology
        self.interval = interval
        self.noConsumerAfter = noConsumerAfter
        self.logger = logger
        known = Mutex(Set(Topology.standardTaskQueues))
    }

    /// Adds a task queue to watch (one a workflow named).
    func watch(_ taskQueue: String) {
        _ = known.withLock { $0.insert(taskQueue) }
    }

    func start() {
        Thread.detachNewThread { [self] in
            defer { finished.signal() }
            var connection: AMQPConnection?
            var emptySince: [String: Date] = [:]
            var flagged: Set<String> = []
            while !stopped.withLock({ $0 }) {
                for taskQueue in known.withLock({ $0 }).sorted() {
                    let queue = topology.queue(forTaskQueue: taskQueue)
                    do {
                        if connection == nil { connection = try AMQPConnection(url: url) }
                        let (messages, consumers) = try connection!.inspect(queue: queue)
                        Gauge(label: "keel_queue_messages", dimensions: [("task_queue", taskQueue)]).record(Double(messages))
                        Gauge(label: "keel_queue_consumers", dimensions: [("task_queue", taskQueue)]).record(Double(consumers))
                        let starving = messages > 0 && consumers == 0
                        if starving {
                            let since = emptySince[taskQueue] ?? Date()
                            emptySince[taskQueue] = since
                            if Date().timeIntervalSince(since) >= noConsumerAfter, flagged.insert(taskQueue).inserted {
                                logger.warning(
                                    "task queue \(taskQueue) (\(queue)) has \(messages) task(s) and no consumer for \(Int(noConsumerAfter)) s: start a worker with `keel worker --queue \(taskQueue)`")
                            }
                        } else {
                            emptySince[taskQueue] = nil
                            if flagged.remove(taskQueue) != nil { logger.info("task queue \(taskQueue) has a consumer again") }
                        }
                        Gauge(label: "keel_queue_stalled", dimensions: [("task_queue", taskQueue)]).record(flagged.contains(taskQueue) ? 1 : 0)
                    } catch {
                        // A queue not declared yet closes the channel: reconnect on the next pass.
                        connection?.close()
                        connection = nil
                    }
                }
                var waited = 0.0
                while waited < interval, !stopped.withLock({ $0 }) {
                    Thread.sleep(forTimeInterval: 0.05)
                    waited += 0.05
                }
            }
            connection?.close()
        }
    }

    /// Stops the thread and waits for it (off the cooperative pool).
    func stop() async {
        stopped.withLock { $0 = true }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { [finished] in
                finished.wait()
                continuation.resume()
            }
        }
    }
}
