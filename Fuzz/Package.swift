// swift-tools-version:6.1
import PackageDescription

// libFuzzer's entry points for Wharf's FuzzTargets (scripts/fuzz.sh builds and runs them). A
// package of its own so that the normal build never links libFuzzer's main.
let package = Package(
    name: "wharf-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "wharf", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "wharf-fuzz",
            dependencies: [.product(name: "WharfFuzzTargets", package: "wharf")],
            // gold fails on this link (an internal error reading DWARF); lld does not.
            linkerSettings: [.unsafeFlags(["-use-ld=lld"])]
        ),
    ]
)
