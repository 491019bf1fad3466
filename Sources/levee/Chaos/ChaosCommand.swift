import Foundation
import Kafka
import Pipeline
import Synchronization

/// `levee chaos`: a hostile run of the whole pipeline with real worker processes, and the audit
/// of what it left behind (lost jobs, duplicate terminal records, traces).
enum ChaosCommand: LeveeCommand {
    static let name = "chaos"
    static let summary = "Kill workers and break brokers while jobs drain, then audit: lost, duplicates, traces"
    static let help = """
    Usage: levee chaos [--jobs N] [--workers W] [--duration S] [--broker embedded|noida] [--json] [options]

    Starts a broker, creates Levee's topics, starts W `levee worker` processes with the synthetic
    engine (random delays, a share of transient failures), submits N jobs mixed with poison
    (invalid JSON, or a model no worker serves), oversize and already-expired ones, and while
    they drain: SIGKILLs a random worker every few seconds and restarts it (same worker id), sends
    SIGTERM to another now and then (the graceful path) and restarts it, and on `embedded` also
    takes brokers down and up, adds latency and pushes request errors (Produce, Fetch,
    OffsetCommit, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn) through the
    broker's control socket. The group protocol (JoinGroup, SyncGroup, Heartbeat,
    FindCoordinator) and the group coordinator's broker are spared: librdkafka 2.0.2's mock
    aborts on a member's retried join (RELIABILITY.md). The chaos stops after --duration seconds or when every job has a
    terminal record; then the faults are healed, the rest drains, the reconciler runs (and may
    re-enqueue lost jobs), every process started is stopped, and the topics are read to their
    ends for one summary. Everything it started is stopped on SIGINT/SIGTERM too.

    Verdict (exit 1 when it fails):
      noida     lost = 0 and no job has two terminal records under read_committed (real
                transactions: exactly once, exactly)
      embedded  lost = 0 and every job has a terminal record; duplicates are reported, not failed
                on: librdkafka's mock cluster does not enforce transactions (see KAFKA-HERE.md)

    Options:
      --jobs N              jobs to submit (default 1000)
      --workers W           worker processes (default 4)
      --duration S          longest chaos phase in seconds (default 60)
      --broker KIND         embedded (default: `levee broker --brokers 3`) or noida (noida-db)
      --bootstrap HOST:PORT with --broker noida: use this running noida-db instead of starting one
      --partitions P        partitions of Levee's topics (default 12)
      --concurrency C       jobs each worker runs at once (default 2)
      --synthetic-delay MS-MS  engine time per job (default 20-200)
      --failure-rate R      share of attempts the engine fails with a retriable error (default 0.05)
      --kill-every S        mean seconds between SIGKILLs (default 3)
      --term-every S        mean seconds between SIGTERMs (default 10)
      --fault-every S       embedded: mean seconds between broker faults (default 6)
      --timeout S           longest wait for the jobs to drain after the chaos (default 300)
      --sla S               the reconciler's SLA for calling a job lost (default 20)
      --seed N              seed for the choices (default: random; printed)
      --near-limit          oversize jobs are raw records of 0.9× to 2× the dead-letter topic's
                            record limit (about 1 MB) instead of 270 KB jobs, so each dead letter
                            must keep only the first part of its original
      --keep-logs DIR       keep the workers' and brokers' logs in DIR (default: a temporary
                            directory, removed when the run passes)
      --json                the summary as one JSON object (progress goes to stderr)
    """

    struct Options {
        var jobs = 1000
        var workers = 4
        var duration = 60.0
        var broker = "embedded"
        var bootstrap: String?
        var partitions = 12
        var concurrency = 2
        var delay = "20-200"
        var failureRate = 0.05
        var killEvery = 3.0
        var termEvery = 10.0
        var faultEvery = 6.0
        var timeout = 300.0
        var sla = 20.0
        var seed: UInt64
        var keepLogs: String?
        var json = false
        /// Oversize jobs near and over the record size limit (see --near-limit).
        var nearLimit = false
    }

    static func parse(_ arguments: inout Arguments) throws -> Options {
        var o = Options(seed: UInt64.random(in: 1...999_999))
        o.json = arguments.flag("--json")
        o.nearLimit = arguments.flag("--near-limit")
        o.jobs = try arguments.option("--jobs", as: Int.self) ?? o.jobs
        o.workers = try arguments.option("--workers", as: Int.self) ?? o.workers
        o.duration = try arguments.option("--duration", as: Double.self) ?? o.duration
        o.broker = try arguments.option("--broker") ?? o.broker
        o.bootstrap = try arguments.option("--bootstrap")
        o.partitions = try arguments.option("--partitions", as: Int.self) ?? o.partitions
        o.concurrency = try arguments.option("--concurrency", as: Int.self) ?? o.concurrency
        o.delay = try arguments.option("--synthetic-delay") ?? o.delay
        o.failureRate = try arguments.option("--failure-rate", as: Double.self) ?? o.failureRate
        o.killEvery = try arguments.option("--kill-every", as: Double.self) ?? o.killEvery
        o.termEvery = try arguments.option("--term-every", as: Double.self) ?? o.termEvery
        o.faultEvery = try arguments.option("--fault-every", as: Double.self) ?? o.faultEvery
        o.timeout = try arguments.option("--timeout", as: Double.self) ?? o.timeout
        o.sla = try arguments.option("--sla", as: Double.self) ?? o.sla
        o.seed = try arguments.option("--seed", as: UInt64.self) ?? o.seed
        o.keepLogs = try arguments.option("--keep-logs")
        try arguments.finish()
        guard ["embedded", "noida"].contains(o.broker) else { throw CommandFailure.usage("--broker expects embedded or noida, got '\(o.broker)'") }
        if o.bootstrap != nil && o.broker != "noida" { throw CommandFailure.usage("--bootstrap is for --broker noida (the embedded broker is started here)") }
        guard (1...100_000).contains(o.jobs) else { throw CommandFailure.usage("--jobs expects 1...100000, got \(o.jobs)") }
        guard (1...32).contains(o.workers) else { throw CommandFailure.usage("--workers expects 1...32, got \(o.workers)") }
        guard o.duration > 0 && o.duration <= 86_400 else { throw CommandFailure.usage("--duration expects seconds in (0, 86400], got \(o.duration)") }
        guard (1...1000).contains(o.partitions) else { throw CommandFailure.usage("--partitions expects 1...1000, got \(o.partitions)") }
        guard (1...256).contains(o.concurrency) else { throw CommandFailure.usage("--concurrency expects 1...256, got \(o.concurrency)") }
        guard o.failureRate >= 0 && o.failureRate < 1 else { throw CommandFailure.usage("--failure-rate expects a share in [0, 1), got \(o.failureRate)") }
        let parts = o.delay.split(separator: "-").map { Int($0) }
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0 != nil && $0! >= 0 }) else {
            throw CommandFailure.usage("--synthetic-delay expects MS or MIN-MAX milliseconds, got '\(o.delay)'")
        }
        for (name, value) in [("--kill-every", o.killEvery), ("--term-every", o.termEvery), ("--fault-every", o.faultEvery)] {
            guard value >= 0.2 else { throw CommandFailure.usage("\(name) expects at least 0.2 seconds, got \(value)") }
        }
        guard o.timeout > 0 else { throw CommandFailure.usage("--timeout expects seconds > 0") }
        guard o.sla >= 0 else { throw CommandFailure.usage("--sla expects seconds ≥ 0") }
        return o
    }

    static func run(_ arguments: inout Arguments) async throws {
        let options = try parse(&arguments)
        let run = try ChaosRun(options: options)
        // SIGINT/SIGTERM of the run itself: stop every child at once, then exit.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let signals = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                printError("chaos: \(number == SIGINT ? "SIGINT" : "SIGTERM") received: stopping every process this run started")
                ChaosChildren.shared.killAll()
                run.removeWorkDirectoryIfTemporary()
                exit(130)
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        let summary: ChaosSummary
        do {
            summary = try await run.execute()
        } catch {
            await run.stopEverything()
            printError("chaos: logs kept in \(run.workDirectory.path)")
            if let failure = error as? CommandFailure { throw failure }
            throw CommandFailure.failed("\(error)")
        }
        if options.json { try printJSON(summary) } else { printOut(summary.text) }
        if summary.verdict.passed && options.keepLogs == nil { run.removeWorkDirectoryIfTemporary() }
        guard summary.verdict.passed else {
            throw CommandFailure.failed("verdict FAIL: " + summary.verdict.failures.joined(separator: "; "))
        }
    }
}

/// A seeded random source (SplitMix64), so a run's choices can be repeated with --seed.
struct ChaosRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
