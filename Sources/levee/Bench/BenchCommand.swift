import Foundation

/// `levee bench <what>`: measurements that back the numbers in BENCHMARKS.md.
/// Each benchmark lives in its own file as an enum with `summary`, `help` and `run`.
enum BenchCommand: LeveeCommand {
    static let name = "bench"
    static let summary = "Run a benchmark (kafka, inference)"

    private static let benchmarks: [(name: String, summary: String, help: String, run: @Sendable (inout Arguments) async throws -> Void)] = [
        ("kafka", KafkaBench.summary, KafkaBench.help, { try await KafkaBench.run(&$0) }),
        ("inference", InferenceBench.summary, InferenceBench.help, { try await InferenceBench.run(&$0) }),
    ]

    static var help: String {
        var text = "Usage: levee bench <benchmark> [options] [--json]\n\nBenchmarks:\n"
        for bench in benchmarks {
            text += "  " + bench.name.padding(toLength: 12, withPad: " ", startingAt: 0) + bench.summary + "\n"
        }
        return text + "\nlevee bench <benchmark> --help lists a benchmark's options."
    }

    static let handlesOwnHelp = true

    static func run(_ arguments: inout Arguments) async throws {
        let wantsHelp = arguments.wantsHelp
        guard let which = arguments.positional() else {
            if wantsHelp { printOut(help + "\n"); return }
            throw CommandFailure.usage("which benchmark? one of: " + benchmarks.map(\.name).joined(separator: ", "))
        }
        guard let bench = benchmarks.first(where: { $0.name == which }) else {
            throw CommandFailure.usage("unknown benchmark '\(which)'; one of: " + benchmarks.map(\.name).joined(separator: ", "))
        }
        if wantsHelp { printOut(bench.help + "\n"); return }
        try await bench.run(&arguments)
    }
}
