// swift-tools-version:6.0
// A pipeline of your own on Keel. In your repository, depend on Keel by URL instead:
//   .package(url: "https://github.com/<you>/keel", branch: "main")
import PackageDescription

let package = Package(
    name: "Starter",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Keel", path: "../..")],
    targets: [
        .target(name: "Starter", dependencies: [.product(name: "Keel", package: "Keel")]),
        .executableTarget(name: "starter-server", dependencies: ["Starter", .product(name: "Keel", package: "Keel")])
    ]
)
