// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Keel",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Keel", targets: ["Keel"]),
        .library(name: "KeelTestKit", targets: ["KeelTestKit"]),
        .library(name: "KeelHarness", targets: ["KeelHarness"]),
        .library(name: "KeelCommandLine", targets: ["KeelCommandLine"]),
        .executable(name: "keel", targets: ["keel"])
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // OTLP over HTTP only: the gRPC exporter would add grpc-swift to every build.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0")
    ],
    targets: [
        // rabbitmq-c (Debian: librabbitmq-dev) and the few C helpers Swift cannot do without.
        .target(name: "CAMQP", linkerSettings: [.linkedLibrary("rabbitmq")]),
        // libcurl (Debian: libcurl4-openssl-dev) and setters for its variadic curl_easy_setopt.
        .target(name: "CCurl", linkerSettings: [.linkedLibrary("curl")]),
        // Records the fatal signal that ends a coordinator, for crash quarantine.
        .target(name: "CCrashMarker"),
        // SQLite's session extension (Debian: libsqlite3-dev): changesets for the replicated history.
        .target(name: "CSQLiteSession", linkerSettings: [.linkedLibrary("sqlite3")]),
        // A VFS that writes a commit's write-ahead log frames with one system call.
        .target(name: "CSQLiteWALBuffer", linkerSettings: [.linkedLibrary("sqlite3")]),
        // The RabbitMQ transport: connections, confirms, consumers, topology, reconnects.
        .target(
            name: "KeelAMQP",
            dependencies: [
                "CAMQP",
                .product(name: "Logging", package: "swift-log")
            ]
        ),
        // No I/O: workflow and activity protocols, history events, retry policy, the
        // deterministic executor and the replayer.
        .target(
            name: "KeelCore",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log")
            ]
        ),
        // The SQLite event store: runs, events, durable timers, the task outbox.
        .target(
            name: "KeelHistory",
            dependencies: [
                "KeelCore",
                "CSQLiteSession",
                "CSQLiteWALBuffer",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift")
            ]
        ),
        // The coordinator and the activity worker, wired to a store and a transport.
        .target(
            name: "KeelRuntime",
            dependencies: [
                "KeelCore",
                "KeelHistory",
                "KeelAMQP",
                "CCrashMarker",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
            ]
        ),
        // LLM providers over libcurl: classification, Retry-After, failover, pricing, the LLM
        // activity, and the workflow-side budget and circuit-breaker gate.
        .target(
            name: "KeelLLM",
            dependencies: [
                "CCurl", "KeelCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        // `keel mock-llm`: a fault-injecting HTTP server speaking both provider APIs.
        .target(
            name: "KeelMockLLM",
            dependencies: [
                "KeelLLM",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
            ]
        ),
        // The reference pipelines, compiled into `keel`; each a template for users.
        .target(name: "KeelExamples", dependencies: ["Keel"]),
        // The coordinator's web console and JSON API (docs/api.md), assets compiled in.
        .target(
            name: "KeelConsole",
            dependencies: [
                "KeelCore", "KeelHistory", "KeelRuntime", "KeelAMQP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types")
            ]
        ),
        // A broker and workers in memory, for running workflows in one process (tests, benches,
        // a user's own tests): the swift-jobs `.memory` idea.
        .target(name: "KeelInMemory", dependencies: ["KeelCore", "KeelRuntime"]),
        // What users import.
        .target(name: "Keel", dependencies: ["KeelCore", "KeelHistory", "KeelRuntime", "KeelAMQP", "KeelLLM", "KeelInMemory"]),
        // Real Keel processes exercised from outside: child processes, temporary folders, the
        // message fuzzer. Shared by `keel bench` and the tests.
        .target(name: "KeelHarness", dependencies: ["Keel"]),
        // For tests: manual clock, fault-injecting store, an LLM stack, free ports, test topologies.
        .target(
            name: "KeelTestKit",
            dependencies: [
                "Keel", "KeelHarness", "KeelMockLLM", .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing")
            ]),
        // Every `keel` subcommand for the workflows and activities an executable registers
        // (`KeelApplication`): what a team's own pipeline binary is made of.
        .target(
            name: "KeelCommandLine",
            dependencies: [
                "Keel",
                "KeelMockLLM",
                "KeelConsole",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),
        // `keel`: the command line with the reference pipelines and the benches.
        .executableTarget(
            name: "keel",
            dependencies: [
                "Keel",
                "KeelCommandLine",
                "KeelHarness",
                "KeelMockLLM",
                "KeelExamples",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),
        .testTarget(name: "KeelAMQPTests", dependencies: ["KeelAMQP", "KeelTestKit"]),
        .testTarget(name: "KeelExamplesTests", dependencies: ["Keel", "KeelTestKit", "KeelExamples", "KeelMockLLM"]),
        .testTarget(name: "KeelCoreTests", dependencies: ["KeelCore"]),
        .testTarget(
            name: "KeelLLMTests",
            dependencies: [
                "Keel", "KeelTestKit", "KeelMockLLM", .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing")
            ]
        ),
        .testTarget(
            name: "KeelRuntimeTests",
            dependencies: ["Keel", "KeelTestKit", "KeelConsole"],
            resources: [.copy("Fixtures")]
        )
    ],
    swiftLanguageModes: [.v6]
)
