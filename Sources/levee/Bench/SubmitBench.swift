import Foundation
import Synchronization
import Kafka
import Pipeline

/// `levee bench submit`: how fast one process can hand jobs to Levee (peak shaving), next to
/// librdkafka's own produce rate for messages of the same size, measured in the same run.
enum SubmitBench {
    static let summary = "Submit throughput and ack latency through JobClient vs raw librdkafka"
    static let help = """
    Usage: levee bench submit [--jobs N] [--rate R] [--steady-seconds S] [--workers W] [--window K]
                              [--partitions P] [--brokers LIST] [-X key=value]... [--json]

    Phases, each on fresh topics (its own prefix), all in one run:
      A  burst: N jobs through JobClient.submit, no worker running; K submits in flight at once.
         Once with the client's trace events (submitted/accepted, 2 extra records per job, the
         default) and once without (one record per job, the same count as the raw side).
      raw  librdkafka's C API producing N messages of the jobs' average encoded size (same
         producer properties as JobClient: idempotent, acks=all, linger.ms=1, no Nagle).
      B  the same burst while W workers (in-process Worker instances, synthetic engine at zero
         delay, exactly-once) consume the jobs in this process.
      C  steady: R jobs/s paced for S seconds, no worker; p99 ack is the goal.
    Ack latency is per job: from the submit call to its return (the brokers acknowledged it).
    Accepted jobs/s is N over the time from the first submit to the last ack.

    Options:
      --jobs N             jobs per burst (default 100000)
      --window K           submits in flight at once in a burst (default 1000)
      --rate R             phase C's rate in jobs/s (default 10000)
      --steady-seconds S   phase C's length (default 10)
      --workers W          workers in phase B (default 2)
      --partitions P       partitions per topic (default 32; the embedded cluster keeps only
                           about 5 MiB per partition)
      --brokers LIST       use these Kafka brokers instead of the embedded cluster
      -X key=value         librdkafka property for every client (repeatable)
      --json               one JSON object instead of the table (progress still on stderr)

    Goals (issue 7): A without trace events ≥ 0.5× the raw produce rate; p99 ack under 10 ms at
    a steady 10,000 jobs/s.
    """

    struct Phase: Codable {
        var name: String
        var label: String
        var jobs: Int
        var accepted: Int
        var seconds: Double
        var jobsPerSecond: Double
        var ackMs: LatencyFigures
        var traceEvents: Bool
        var workers: Int
        /// Jobs the workers finished while the burst was being submitted (phase B).
        var workerJobsDone: Int?
        /// Phase C: the rate asked for and the pacer's largest delay behind its schedule.
        var targetRate: Double?
        var pacerMaxLagMs: Double?
    }

    struct Raw: Codable {
        var messages: Int
        var size: Int
        var seconds: Double
        var messagesPerSecond: Double
    }

    struct Goal: Codable {
        var goal: String
        var value: Double
        var met: Bool
    }

    struct Report: Codable {
        var cluster: String
        var jobs: Int
        var window: Int
        var partitions: Int
        var envelopeBytes: Int
        var producerProperties: [String: String]
        var workers: String
        var phases: [Phase]
        var raw: Raw
        /// Phase A without trace events ÷ raw produce (same message count and size).
        var submitToRaw: Double
        /// Phase A with trace events (3 records per job) ÷ raw produce.
        var submitWithTraceToRaw: Double
        var goals: [Goal]
    }

    static func run(_ arguments: inout Arguments) async throws {
        let jobs = try arguments.option("--jobs", as: Int.self) ?? 100_000
        let window = try arguments.option("--window", as: Int.self) ?? 1000
        let rate = try arguments.option("--rate", as: Double.self) ?? 10_000
        let steadySeconds = try arguments.option("--steady-seconds", as: Double.self) ?? 10
        let workerCount = try arguments.option("--workers", as: Int.self) ?? 2
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 32
        let (brokers, properties) = try BenchCluster.parse(&arguments)
        let json = arguments.flag("--json")
        try arguments.finish()
        guard (1...10_000_000).contains(jobs) else { throw CommandFailure.usage("--jobs expects 1...10000000") }
        guard (1...100_000).contains(window) else { throw CommandFailure.usage("--window expects 1...100000") }
        guard rate.isFinite, rate > 0, rate <= 1_000_000 else { throw CommandFailure.usage("--rate expects a rate above 0 and at most 1000000 jobs/s") }
        guard steadySeconds.isFinite, steadySeconds > 0, steadySeconds <= 3600 else { throw CommandFailure.usage("--steady-seconds expects more than 0 and at most 3600") }
        guard (0...64).contains(workerCount) else { throw CommandFailure.usage("--workers expects 0...64") }
        guard (1...1000).contains(partitions) else { throw CommandFailure.usage("--partitions expects 1...1000") }

        let cluster = try BenchCluster.start(brokers: brokers, properties: properties)
        let progress = BenchProgress()
        let envelopeBytes = try averageEnvelopeBytes()
        if cluster.embedded != nil {
            // Jobs plus the client's trace events must fit the mock's ~5 MiB per partition.
            let perPartition = Double(jobs) * Double(envelopeBytes + 700) / Double(partitions)
            if perPartition > 4.5 * 1_048_576 {
                let needed = Int((Double(jobs) * Double(envelopeBytes + 700) / (4.5 * 1_048_576)).rounded(.up))
                throw CommandFailure.usage("the embedded cluster keeps only about 5 MiB per partition: use --partitions \(needed) or more for \(jobs) jobs")
            }
        }
        progress.report("submit: \(cluster.label); \(jobs) jobs of ~\(envelopeBytes) B, \(partitions) partitions", force: true)

        var phases: [Phase] = []
        // A: burst, no worker, with the client's trace events (the default) and without.
        for traceEvents in [true, false] {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("submit-a"), partitions: partitions)
            let client = try JobClient(connection: connection, writesTraceEvents: traceEvents)
            try await client.prepare()
            let name = traceEvents ? "burst" : "burst-no-trace"
            let result = try await burst(client: client, count: jobs, window: window, progress: progress, label: "A " + name)
            try await client.close()
            phases.append(Phase(name: name, label: "A: burst, no worker" + (traceEvents ? "" : ", no trace events"),
                                jobs: jobs, accepted: result.latencies.count, seconds: rounded(result.seconds, 3),
                                jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                ackMs: LatencyFigures(result.latencies), traceEvents: traceEvents, workers: 0))
        }

        // Raw: the same number of messages of the same size, same producer properties.
        let producerProperties = rawProducerProperties(properties)
        let rawTopic = BenchCluster.uniquePrefix("submit-raw") + "jobs"
        try await cluster.createTopic(rawTopic, partitions: partitions)
        progress.report("submit: raw librdkafka produce of \(jobs) × \(envelopeBytes) B", force: true)
        let raw = try await KafkaBench.onThread { [bootstrap = cluster.bootstrapServers] in
            try RawBaseline.produce(bootstrapServers: bootstrap, topic: rawTopic, messages: jobs, size: envelopeBytes,
                                    properties: producerProperties)
        }

        // B: the same burst while workers consume in this process.
        if workerCount > 0 {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("submit-b"), partitions: partitions)
            let workers = BenchJobs.workers(workerCount, connection: connection, engine: try BenchJobs.syntheticEngine(),
                                            concurrency: 8, delivery: .exactlyOnce,
                                            shortFetchWait: cluster.embedded != nil)
            let client = try JobClient(connection: connection)
            try await client.prepare()
            let (result, done) = try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in workers { group.addTask { try await worker.run() } }
                progress.report("submit: waiting for \(workerCount) workers to join", force: true)
                guard try await BenchJobs.waitUntilReady(workers) else {
                    for worker in workers { worker.shutdown() }
                    throw CommandFailure.failed("the workers did not get partitions within 60 s")
                }
                let result = try await burst(client: client, count: jobs, window: window, progress: progress, label: "B with workers") {
                    "; workers finished \(workers.reduce(0) { $0 + $1.statistics.terminal }), received \(workers.reduce(0) { $0 + $1.statistics.received })"
                }
                let done = workers.reduce(0) { $0 + $1.statistics.terminal }
                progress.report("submit: stopping the workers", force: true)
                for worker in workers { worker.shutdown() }
                try await group.waitForAll()
                return (result, done)
            }
            try await client.close()
            phases.append(Phase(name: "burst-with-workers", label: "B: burst, \(workerCount) workers running",
                                jobs: jobs, accepted: result.latencies.count, seconds: rounded(result.seconds, 3),
                                jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                ackMs: LatencyFigures(result.latencies), traceEvents: true, workers: workerCount,
                                workerJobsDone: done))
        }

        // C: a steady rate.
        do {
            let count = max(1, Int(rate * steadySeconds))
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("submit-c"), partitions: partitions)
            let client = try JobClient(connection: connection)
            try await client.prepare()
            let result = try await paced(client: client, count: count, rate: rate, maxInFlight: max(window, 10_000), progress: progress)
            try await client.close()
            phases.append(Phase(name: "steady", label: String(format: "C: steady %.0f jobs/s, no worker", rate),
                                jobs: count, accepted: result.latencies.count, seconds: rounded(result.seconds, 3),
                                jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                ackMs: LatencyFigures(result.latencies), traceEvents: true, workers: 0,
                                targetRate: rate, pacerMaxLagMs: rounded(result.maxLagMs, 3)))
        }

        let rawRate = raw.messagesPerSecond
        let noTrace = phases.first { $0.name == "burst-no-trace" }!.jobsPerSecond
        let withTrace = phases.first { $0.name == "burst" }!.jobsPerSecond
        let steady = phases.first { $0.name == "steady" }!
        let ratio = rawRate > 0 ? rounded(noTrace / rawRate) : 0
        var goals = [Goal(goal: "burst (one record per job) ≥ 0.5× raw librdkafka produce", value: ratio, met: ratio >= 0.5)]
        goals.append(Goal(goal: String(format: "p99 ack < 10 ms at a steady %.0f jobs/s", rate), value: steady.ackMs.p99,
                          met: steady.ackMs.p99 < 10 && steady.jobsPerSecond >= 0.95 * rate))
        let report = Report(
            cluster: cluster.label, jobs: jobs, window: window, partitions: partitions, envelopeBytes: envelopeBytes,
            producerProperties: producerProperties,
            workers: "in-process Worker instances, synthetic engine (zero delay, no model), exactly-once, concurrency 8",
            phases: phases,
            raw: Raw(messages: raw.messages, size: envelopeBytes, seconds: rounded(raw.seconds, 3), messagesPerSecond: rawRate.rounded()),
            submitToRaw: ratio, submitWithTraceToRaw: rawRate > 0 ? rounded(withTrace / rawRate) : 0, goals: goals)
        if json {
            try printJSON(report)
        } else {
            printOut(table(report))
        }
        withExtendedLifetime(cluster) {}
    }

    /// JobClient's producer properties, for the raw side.
    static func rawProducerProperties(_ extra: [String: String]) -> [String: String] {
        var properties = KafkaProducer.defaultProperties
        properties["linger.ms"] = "1"
        properties["socket.nagle.disable"] = "true"
        return properties.merging(extra) { $1 }
    }

    static func averageEnvelopeBytes() throws -> Int {
        var total = 0
        for i in 0..<100 { total += try LeveeJSON.encode(BenchJobs.make(i)).count }
        return total / 100
    }

    struct BurstResult {
        var latencies: [Double]
        var seconds: Double
        var maxLagMs: Double = 0
    }

    /// Submits `count` jobs with at most `window` in flight; returns each job's ack latency.
    static func burst(client: JobClient, count: Int, window: Int, progress: BenchProgress, label: String,
                      status: @Sendable () -> String = { "" }) async throws -> BurstResult {
        let clock = ContinuousClock()
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        let start = clock.now
        try await withThrowingTaskGroup(of: Double.self) { group in
            var next = 0
            while next < count || !group.isEmpty {
                while next < count && next - latencies.count < window {
                    let job = BenchJobs.make(next)
                    next += 1
                    group.addTask {
                        let t = clock.now
                        _ = try await client.submit(job)
                        return (clock.now - t).milliseconds
                    }
                }
                guard let latency = try await group.next() else { break }
                latencies.append(latency)
                progress.report("submit: \(label): \(latencies.count)/\(count) acknowledged" + status())
            }
        }
        return BurstResult(latencies: latencies, seconds: (clock.now - start).benchSeconds)
    }

    /// Submits `count` jobs at `rate` jobs/s (each started on its schedule, at most `maxInFlight` at once).
    static func paced(client: JobClient, count: Int, rate: Double, maxInFlight: Int, progress: BenchProgress) async throws -> BurstResult {
        let clock = ContinuousClock()
        let state = PacedState()
        let start = clock.now
        var maxLag = Duration.zero
        try await withThrowingDiscardingTaskGroup { group in
            for i in 0..<count {
                let due = start + .nanoseconds(Int64(Double(i) * 1e9 / rate))
                // Sleep only when ahead by more than a millisecond; then start every job now due.
                if due - clock.now > .milliseconds(1) { try await Task.sleep(until: due, clock: .continuous) }
                while state.inFlight.withLock({ $0 }) >= maxInFlight { try await Task.sleep(for: .milliseconds(1)) }
                maxLag = max(maxLag, clock.now - due)
                state.inFlight.withLock { $0 += 1 }
                let job = BenchJobs.make(i)
                group.addTask {
                    let t = clock.now
                    _ = try await client.submit(job)
                    let ms = (clock.now - t).milliseconds
                    state.inFlight.withLock { $0 -= 1 }
                    state.latencies.withLock { $0.append(ms) }
                }
                if i % 1000 == 0 { progress.report("submit: C steady: \(i)/\(count) started") }
            }
        }
        let latencies = state.latencies.withLock { $0 }
        return BurstResult(latencies: latencies, seconds: (clock.now - start).benchSeconds, maxLagMs: maxLag.milliseconds)
    }

    final class PacedState: Sendable {
        let inFlight = Mutex(0)
        let latencies = Mutex<[Double]>([])
    }

    static func table(_ r: Report) -> String {
        var text = "Submit: \(r.jobs) jobs of ~\(r.envelopeBytes) B, \(r.partitions) partitions, \(r.cluster); \(r.window) in flight in bursts\n"
        text += "phase                                     jobs/s   ack p50    p99   p99.9     max (ms)\n"
        for p in r.phases {
            text += p.label.padding(toLength: 38, withPad: " ", startingAt: 0)
            text += String(format: " %10.0f %8.2f %6.2f %7.2f %7.2f", p.jobsPerSecond, p.ackMs.p50, p.ackMs.p99, p.ackMs.p999, p.ackMs.max)
            if let done = p.workerJobsDone { text += "  (workers finished \(done) jobs meanwhile)" }
            if let lag = p.pacerMaxLagMs { text += String(format: "  (pacer lag max %.1f ms)", lag) }
            text += "\n"
        }
        text += "raw librdkafka produce (C API)".padding(toLength: 38, withPad: " ", startingAt: 0)
        text += String(format: " %10.0f   (%d × %d B in %.2f s)\n", r.raw.messagesPerSecond, r.raw.messages, r.raw.size, r.raw.seconds)
        text += String(format: "burst ÷ raw: %.2f× without trace events, %.2f× with them (3 records per job)\n", r.submitToRaw, r.submitWithTraceToRaw)
        text += "workers: \(r.workers)\n"
        for g in r.goals { text += "goal: \(g.goal): \(g.value) — \(g.met ? "met" : "NOT met")\n" }
        return text
    }
}
