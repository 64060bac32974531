// swift-tools-version: 6.0
import PackageDescription

// The libFuzzer driver for swift-lora's parsers (Sources/FuzzTargets). A package of its own so
// that the main build and CI never link libFuzzer. Built by Fuzz/run.sh (`make fuzz`) with
// -sanitize=fuzzer,address and -parse-as-library (libFuzzer supplies `main`).
let package = Package(
    name: "swift-lora-fuzz",
    dependencies: [.package(name: "swift-lora", path: "..")],
    targets: [
        .executableTarget(
            name: "lora-fuzz",
            dependencies: [.product(name: "FuzzTargets", package: "swift-lora")]
        ),
    ]
)
