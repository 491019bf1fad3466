import Foundation
import Pipeline

/// `levee bench reconcile`: the reconciler's work per pass and its memory as the jobs it knows
/// grow, with finished jobs kept compact (now) against kept in full (before), side by side.
enum ReconcileBench {
    static let summary = "Reconciler pass time and memory at 100,000 and 1,000,000 known jobs, compact vs full state"
    static let help = """
    Usage: levee bench reconcile [--jobs N[,N...]] [--new K] [--passes P] [--json]

    For each N (default 100000,1000000): puts N finished jobs into the reconciler's state (as
    the state their records leave: job record, `received`, terminal result, `result_committed`;
    inserted directly, since decoding millions of JSON records takes most of an hour on a shared
    2-core machine), judges it once, then runs P passes (default 5) that each apply K new
    finished jobs' real records (default 1000; four JSON records per job as they come off the
    wire, keyed by job id, over 64 partitions) and judge again. Twice per N, each in a fresh child process so
    its memory is its own: `full` keeps every job in full and judges every job each pass (the
    reconciler before issue 14), `compact` keeps finished, audited jobs as a few bytes and judges
    only open ones (now). Reports the resident memory the state took (growth across the build
    and first judgement), the peak, the first judgement's time and the median pass time.

    What is timed is the reconciler's own work: reading the new records from Kafka is not, since
    a running reconciler's reads resume where its last pass stopped (they cost the same K records
    either way). No broker is used, so the embedded cluster's ~5 MiB per partition limit does not
    apply.

      --jobs N[,N...]   known jobs per run (default 100000,1000000)
      --new K           new finished jobs per measured pass (default 1000)
      --passes P        measured passes (default 5)
      --json            one JSON object instead of the table (progress on stderr)
    """

    struct Report: Codable {
        var newPerPass: Int
        var passes: Int
        var runs: [ReconcilerStateBenchmark.Result]
        enum CodingKeys: String, CodingKey { case newPerPass = "new_per_pass", passes, runs }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let child = try arguments.option("--child")
        let jobsText = try arguments.option("--jobs") ?? "100000,1000000"
        let new = try arguments.option("--new", as: Int.self) ?? 1000
        let passes = try arguments.option("--passes", as: Int.self) ?? 5
        let json = arguments.flag("--json")
        try arguments.finish()
        let sizes = jobsText.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0.map { (1...20_000_000).contains($0) } ?? false }) else {
            throw CommandFailure.usage("--jobs expects N[,N...] with each N in 1...20000000, got '\(jobsText)'")
        }
        guard (1...1_000_000).contains(new) else { throw CommandFailure.usage("--new expects 1...1000000") }
        guard (1...1000).contains(passes) else { throw CommandFailure.usage("--passes expects 1...1000") }

        if let child {
            guard child == "compact" || child == "full", sizes.count == 1 else { throw CommandFailure.usage("--child expects compact or full and one --jobs N") }
            let result = ReconcilerStateBenchmark.run(jobs: sizes[0]!, newPerPass: new, passes: passes, compact: child == "compact") { done in
                printError("bench reconcile (\(child), \(sizes[0]!) jobs): \(done) built")
            }
            try printJSON(result)
            return
        }

        var exe = CommandLine.arguments[0]
        if let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { exe = resolved }
        var runs: [ReconcilerStateBenchmark.Result] = []
        for n in sizes.compactMap({ $0 }) {
            for variant in ["full", "compact"] {
                printError("bench reconcile: \(n) jobs, \(variant) state …")
                let process = Process()
                process.executableURL = URL(fileURLWithPath: exe)
                process.arguments = ["bench", "reconcile", "--child", variant, "--jobs", String(n), "--new", String(new), "--passes", String(passes)]
                let out = Pipe()
                process.standardOutput = out
                try process.run()
                let data = out.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                guard process.terminationStatus == 0,
                      let result = try? JSONDecoder().decode(ReconcilerStateBenchmark.Result.self, from: data) else {
                    throw CommandFailure.failed("the \(variant) run at \(n) jobs failed (status \(process.terminationStatus))")
                }
                runs.append(result)
            }
        }
        let report = Report(newPerPass: new, passes: passes, runs: runs)
        if json { try printJSON(report); return }
        var text = "levee bench reconcile — \(passes) passes of \(new) new finished jobs each, after N known jobs\n"
        text += "  known jobs  state     state memory   peak RSS   build     first judge   median pass   open/settled after\n"
        for r in runs {
            let sorted = r.passMilliseconds.sorted()
            let median = sorted[(sorted.count - 1) / 2]
            text += "  " + String(r.jobs).padding(toLength: 10, withPad: " ", startingAt: 0)
                + "  " + (r.compact ? "compact" : "full").padding(toLength: 8, withPad: " ", startingAt: 0)
                + "  " + String(format: "%8.1f MiB", Double(r.stateBytes) / 1_048_576)
                + "  " + String(format: "%6.0f MiB", Double(r.peakBytes) / 1_048_576)
                + "  " + String(format: "%6.1f s", r.buildSeconds)
                + "  " + String(format: "%9.1f ms", r.firstJudgeSeconds * 1000)
                + "  " + String(format: "%9.1f ms", median)
                + "   \(r.openJobs)/\(r.settledJobs)\n"
        }
        printOut(text)
    }
}
