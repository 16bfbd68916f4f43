// swift-tools-version:5.9
// Starling for Swift (iOS 15+, macOS 12+). The binary target is built on macOS by
// scripts/build-xcframework.sh (libstarling.a for devices, simulators and macOS, with the
// uniffi C header and the StarlingFFI module map).
import PackageDescription

let package = Package(
    name: "Starling",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Starling", targets: ["Starling"]),
    ],
    targets: [
        .binaryTarget(name: "StarlingFFI", path: "StarlingFFI.xcframework"),
        // Sources/Starling/Starling.swift is generated (scripts/gen-bindings.sh); the
        // idiomatic layer (AsyncStream, async, Sendable) sits beside it. The header and
        // module map in Sources/StarlingFFI/include go into the xcframework.
        .target(
            name: "Starling",
            dependencies: ["StarlingFFI"],
            path: "Sources/Starling"
        ),
        .testTarget(
            name: "StarlingTests",
            dependencies: ["Starling"],
            path: "Tests/StarlingTests"
        ),
    ]
)
