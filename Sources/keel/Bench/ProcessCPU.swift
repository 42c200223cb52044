import Foundation
import Keel
import KeelHarness

/// CPU time (user + system) of the bench's processes and of the broker, from /proc, so a bench
/// can say where each step's CPU goes.
struct ProcessCPU {
    /// The CPU seconds a process has used so far; nil when it is gone or /proc cannot say.
    static func seconds(pid: Int32) -> Double? {
        guard let fields = processStatFields(of: pid), fields.count > 12, let user = Double(fields[11]),
            let system = Double(fields[12])
        else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The Erlang VM of the broker that `scripts/rabbitmq` runs for `url`'s port (its node is
    /// `keel<port>@localhost`); nil for a broker started otherwise.
    static func brokerPid(for url: AMQPURL) -> Int32? {
        let node = "RABBITMQ_NODENAME=keel\(url.port)@localhost"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                let command = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                command.hasPrefix("beam"),
                let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ")
            else { continue }
            if environment.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == node }) { return pid }
        }
        return nil
    }

    /// CPU seconds of the coordinator, the workers together and the broker, at one moment.
    struct Sample {
        var coordinator: Double
        var workers: Double
        var broker: Double?
    }

    static func sample(_ deployment: BenchDeployment) -> Sample {
        let pids = deployment.processes.map(\.process.processIdentifier)
        let broker = brokerPid(for: deployment.url).flatMap { seconds(pid: $0) }
        return Sample(
            coordinator: pids.first.flatMap { seconds(pid: $0) } ?? 0,
            workers: pids.dropFirst().compactMap { seconds(pid: $0) }.reduce(0, +), broker: broker)
    }

    /// Microseconds of CPU per step of each, between two samples, as a sentence and as
    /// `name=value` fields.
    static func perStep(from start: Sample, to end: Sample, steps: Int) -> (sentence: String, fields: String) {
        func micros(_ seconds: Double) -> Double { seconds / Double(max(steps, 1)) * 1_000_000 }
        let coordinator = micros(end.coordinator - start.coordinator)
        let workers = micros(end.workers - start.workers)
        var broker: Double?
        if let before = start.broker, let after = end.broker { broker = micros(after - before) }
        var sentence = String(format: "CPU per step: coordinator %.0f µs, workers %.0f µs", coordinator, workers)
        var fields = String(format: "cpu_us_per_step_coordinator=%.0f cpu_us_per_step_workers=%.0f", coordinator, workers)
        if let broker {
            sentence += String(format: ", broker %.0f µs", broker)
            fields += String(format: " cpu_us_per_step_broker=%.0f", broker)
        } else {
            sentence += ", broker not measured (not a scripts/rabbitmq broker)"
        }
        return (sentence, fields)
    }
}
