// swift-tools-version: 6.0
// Levee: an asynchronous inference pipeline for AIGC jobs, on Apache Kafka.
// No package dependencies: librdkafka comes in as a system library (apt: librdkafka-dev).
import PackageDescription

// The inference kernels are written with SIMD types; on x86-64 let the compiler use AVX2, FMA and
// F16C (haswell: any x86 server since 2013). The code is correct without them, only slower.
#if arch(x86_64)
let inferenceSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let inferenceSettings: [SwiftSetting] = []
#endif

let package = Package(
    name: "Levee",
    platforms: [.macOS(.v15)],  // Synchronization (Mutex, Atomic) needs macOS 15
    products: [
        .executable(name: "levee", targets: ["levee"]),
        .library(name: "Kafka", targets: ["Kafka"]),
        .library(name: "Inference", targets: ["Inference"]),
    ],
    dependencies: [],
    targets: [
        .systemLibrary(
            name: "CRdKafka",
            path: "Sources/CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .target(name: "Kafka", dependencies: ["CRdKafka"]),
        .target(name: "Inference", swiftSettings: inferenceSettings),
        .target(name: "Pipeline", dependencies: ["Kafka", "Inference"]),
        .executableTarget(name: "levee", dependencies: ["Pipeline", "Kafka", "Inference"]),
        .testTarget(name: "KafkaTests", dependencies: ["Kafka"]),
        .testTarget(name: "InferenceTests", dependencies: ["Inference"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline"]),
        .testTarget(name: "LeveeCLITests", dependencies: ["Kafka"]),
    ],
    swiftLanguageModes: [.v6]
)
