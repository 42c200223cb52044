// swift-tools-version:6.0
// A pipeline of your own on Keel. In your repository, depend on Keel by URL instead:
//   .package(url: "https://github.com/<you>/keel", branch: "main")
import PackageDescription

let package = Package(
    name: "Starter",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "triage", targets: ["triage"])],
    dependencies: [.package(name: "Keel", path: "../..")],
    targets: [
        // The workflows and activities: what the coordinator runs and the workers serve.
        .target(name: "Starter", dependencies: [.product(name: "Keel", package: "Keel")]),
        // `triage coordinator`, `triage worker`, `triage start`, `triage replay`, …
        .executableTarget(
            name: "triage",
            dependencies: [
                "Starter", .product(name: "Keel", package: "Keel"), .product(name: "KeelCommandLine", package: "Keel")
            ])
    ]
)
