// swift-tools-version:5.9
// The Starling terminal chat as a SwiftPM executable (macOS). Needs the xcframework:
// run ../scripts/build-xcframework.sh first, then `swift run starling-chat --name alice`.
import PackageDescription

let package = Package(
    name: "StarlingChat",
    platforms: [.macOS(.v12)],
    dependencies: [
        .package(name: "Starling", path: "../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "StarlingChat",
            dependencies: [.product(name: "Starling", package: "Starling")],
            path: "Sources/StarlingChat"
        ),
    ]
)
