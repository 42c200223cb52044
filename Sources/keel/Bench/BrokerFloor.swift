import ArgumentParser
import Foundation
import Keel
import KeelCommandLine
import Synchronization

/// The least a durable step can cost on this broker: per step one persistent task message and one
/// persistent result message, each with a publisher confirm, consumed with manual acks, through
/// the same rabbitmq-c connection code Keel uses, and no history. Keel's own figures are given as
/// ratios to it (docs/benchmarks.md), since the broker and the machine set the absolute numbers.
struct BrokerFloor {
    struct Figures {
        var stepsPerSecond: Double
        var p50Milliseconds: Double
        var p99Milliseconds: Double
    }

    let url: AMQPURL
    /// Steps of the pipelined run (steps/s) and of the sequential one (p50, p99).
    var pipelinedSteps = 20_000
    var sequentialSteps = 2_000
    var window = 256

    /// Task and result bodies of about the size of Keel's (a no-op task's JSON, its result's).
    private static let taskBody = Data(repeating: 0x61, count: 420)
    private static let resultBody = Data(repeating: 0x62, count: 160)

    func measure() async throws -> Figures {
        try await offPool { try self.measureBlocking() }
    }

    private func measureBlocking() throws -> Figures {
        let name = "keel-floor-\(UUID().uuidString.prefix(8).lowercased())"
        let (tasks, results) = (name + ".tasks", name + ".results")
        let admin = try AMQPConnection(url: url)
        defer {
            try? admin.deleteQueue(tasks)
            try? admin.deleteQueue(results)
            admin.close()
        }
        try admin.declareQueue(tasks, deadLetterExchange: nil)
        try admin.declareQueue(results, deadLetterExchange: nil)
        let stop = StopFlag()
        let ended = DispatchSemaphore(value: 0)
        let worker = Thread {
            Self.serve(url: url, tasks: tasks, results: results, window: window, stop: stop)
            ended.signal()
        }
        worker.start()
        // The worker ends before its queues are deleted (the defer above, which runs after this
        // one): RabbitMQ tells a consumer that its queue was deleted, and the worker would print
        // that as an error after the bench's last line.
        defer {
            stop.set()
            ended.wait()
        }
        let throughput = try pipelined(tasks: tasks, results: results)
        let latencies = try sequential(tasks: tasks, results: results).sorted()
        func percentile(_ p: Double) -> Double { latencies[min(Int(Double(latencies.count) * p), latencies.count - 1)] }
        return Figures(stepsPerSecond: throughput, p50Milliseconds: percentile(0.5), p99Milliseconds: percentile(0.99))
    }

    /// The worker's side: takes what tasks are there (up to the window), publishes a result for
    /// each, waits for their confirms, then acknowledges the tasks, as a Keel worker does.
    private static func serve(url: AMQPURL, tasks: String, results: String, window: Int, stop: StopFlag) {
        do {
            let consumer = try AMQPConnection(url: url)
            let publisher = try AMQPConnection(url: url)
            defer {
                consumer.close()
                publisher.close()
            }
            try publisher.enableConfirms()
            try consumer.qos(prefetch: window)
            try consumer.consume(queue: tasks)
            while !stop.isSet {
                // Waits for the first task, then takes those already there.
                var last: UInt64?
                var count = 0
                try publisher.corked {
                    while count < window, let task = try consumer.next(timeout: last == nil ? 0.1 : 0) {
                        try publisher.publish(AMQPMessage(exchange: "", routingKey: results, body: resultBody))
                        last = task.deliveryTag
                        count += 1
                    }
                }
                guard let last else { continue }
                try publisher.waitForConfirms()
                try consumer.ack(last, multiple: true)
            }
        } catch {
            FileHandle.standardError.write(Data("broker floor worker: \(error)\n".utf8))
        }
    }

    /// Steps per second with `window` steps in flight.
    private func pipelined(tasks: String, results: String) throws -> Double {
        let publisher = try AMQPConnection(url: url)
        let consumer = try AMQPConnection(url: url)
        defer {
            publisher.close()
            consumer.close()
        }
        try publisher.enableConfirms()
        try consumer.qos(prefetch: window * 2)
        try consumer.consume(queue: results)
        let begin = ContinuousClock.now
        var published = 0
        var completed = 0
        while completed < pipelinedSteps {
            // Fill the window, confirm what was published, then take the results that came back.
            let batch = min(window - (published - completed), pipelinedSteps - published)
            if batch > 0 {
                try publisher.corked {
                    for _ in 0..<batch {
                        try publisher.publish(AMQPMessage(exchange: "", routingKey: tasks, body: Self.taskBody))
                    }
                }
                try publisher.waitForConfirms()
                published += batch
            }
            var last: UInt64?
            while let result = try consumer.next(timeout: batch > 0 ? 0 : 0.05) {
                last = result.deliveryTag
                completed += 1
                if completed == pipelinedSteps { break }
            }
            if let last { try consumer.ack(last, multiple: true) }
        }
        return Double(pipelinedSteps) / (ContinuousClock.now - begin).seconds
    }

    /// Milliseconds per step, one step at a time.
    private func sequential(tasks: String, results: String) throws -> [Double] {
        let publisher = try AMQPConnection(url: url)
        let consumer = try AMQPConnection(url: url)
        defer {
            publisher.close()
            consumer.close()
        }
        try publisher.enableConfirms()
        try consumer.qos(prefetch: 1)
        try consumer.consume(queue: results)
        var latencies: [Double] = []
        latencies.reserveCapacity(sequentialSteps)
        for _ in 0..<sequentialSteps {
            let begin = ContinuousClock.now
            try publisher.publish(AMQPMessage(exchange: "", routingKey: tasks, body: Self.taskBody))
            try publisher.waitForConfirms()
            var result: AMQPDelivery?
            while result == nil { result = try consumer.next(timeout: 1) }
            try consumer.ack(result!.deliveryTag)
            latencies.append((ContinuousClock.now - begin).seconds * 1000)
        }
        return latencies
    }
}

extension BrokerFloor {
    /// The floor measured before and after `body` (Keel's run, on the same broker), averaged: the
    /// median of two. Nil when `enabled` is false.
    static func around<T>(url: AMQPURL, enabled: Bool, _ body: () async throws -> T) async throws -> (T, Figures?) {
        guard enabled else { return (try await body(), nil) }
        let before = try await BrokerFloor(url: url).measure()
        let result = try await body()
        let after = try await BrokerFloor(url: url).measure()
        print(
            String(
                format: "broker floor before and after: %.0f and %.0f steps/s, p50 %.2f and %.2f ms",
                before.stepsPerSecond, after.stepsPerSecond, before.p50Milliseconds, after.p50Milliseconds))
        return (
            result,
            Figures(
                stepsPerSecond: (before.stepsPerSecond + after.stepsPerSecond) / 2,
                p50Milliseconds: (before.p50Milliseconds + after.p50Milliseconds) / 2,
                p99Milliseconds: (before.p99Milliseconds + after.p99Milliseconds) / 2)
        )
    }
}

/// `--no-floor` for the benches that report against the broker's floor.
struct FloorOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Measure the broker's floor (keel bench floor) before and after, and report floor_ratio.")
    var floor = true
}

/// Tells the floor's worker thread to end.
final class StopFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

struct FloorBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor",
        abstract:
            "The broker's floor: per step a persistent, confirmed task and a persistent, confirmed result with manual acks, no history; pipelined for steps/s, one at a time for p50/p99."
    )

    @OptionGroup var broker: BrokerOptions
    @Option(help: "Steps of the pipelined run.") var steps = 20_000
    @Option(help: "Steps of the sequential run.") var sequentialSteps = 2_000
    @Option(help: "Steps in flight in the pipelined run.") var window = 256

    func run() async throws {
        let floor = BrokerFloor(url: try broker.url(), pipelinedSteps: steps, sequentialSteps: sequentialSteps, window: window)
        let figures = try await floor.measure()
        print(
            String(
                format: "pipelined (window %d): %.0f steps/s; sequential: p50 %.2f ms, p99 %.2f ms", window,
                figures.stepsPerSecond, figures.p50Milliseconds, figures.p99Milliseconds))
        print(
            String(
                format: "floor_steps_per_s=%.0f floor_p50_ms=%.2f floor_p99_ms=%.2f", figures.stepsPerSecond,
                figures.p50Milliseconds, figures.p99Milliseconds))
    }
}
