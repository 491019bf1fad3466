import Foundation
import Synchronization
import Kafka
import Pipeline

/// `levee bench submit`: how fast one process can hand jobs to Levee (peak shaving), next to
/// librdkafka's own produce rate for messages of the same size, measured in the same run.
enum SubmitBench {
    static let summary = "Submit throughput and ack latency through JobClient vs raw librdkafka"
    static let help = """
    Usage: levee bench submit [--jobs N] [--rate R] [--steady-seconds S] [--workers W] [--live-rate R] [--window K]
                              [--partitions P] [--brokers LIST] [-X key=value]... [--json]

    Phases, each on fresh topics (its own prefix), all in one run:
      A  burst: N jobs, no worker running, four ways: through the batch API
         (JobClient.submit([JobEnvelope]), --batch jobs per call) and through submit(_:) one job
         at a time with K in flight; each with the client's trace event (one `accepted` record
         per job, the default) and without (one record per job, the same count as the raw side).
      raw  librdkafka's C API producing N messages of the jobs' average encoded size (same
         producer properties as JobClient: idempotent, acks=all, linger.ms=1, no Nagle).
      B  the same burst (one at a time, K in flight) while W workers (in-process Worker
         instances, synthetic engine at zero delay, exactly-once) consume the jobs in this
         process; then the workers drain what is left. Live rate = jobs they finished while the
         burst was arriving ÷ its duration; backlog rate = the rest ÷ the time to finish it.
         Then a live stream: jobs paced at --live-rate (default 0.9× that backlog rate) for S
         seconds to new workers on fresh topics; their finish rate while it arrives ÷ the
         backlog rate is the goal (a burst at full speed takes the cores the in-process
         workers need: the burst figure measures sharing two cores, not flow control).
      C  steady: R jobs/s paced for S seconds, no worker; p99 ack is the goal.
    Ack latency is per job: from the submit call to its return (the brokers acknowledged it).
    Accepted jobs/s is N over the time from the first submit to the last ack.

    Options:
      --jobs N             jobs per burst (default 100000)
      --window K           submits in flight at once in a burst (default 1000)
      --batch B            jobs per JobClient.submit([JobEnvelope]) call in phase A (default 10000)
      --rate R             phase C's rate in jobs/s (default 10000)
      --steady-seconds S   phase C's length (default 10)
      --workers W          workers in phase B (default 2)
      --live-rate R        phase B's stream in jobs/s (default 0.9× the backlog rate measured)
      --partitions P       partitions per topic (default 32; the embedded cluster keeps only
                           about 5 MiB per partition)
      --brokers LIST       use these Kafka brokers instead of the embedded cluster
      -X key=value         librdkafka property for every client (repeatable)
      --json               one JSON object instead of the table (progress still on stderr)

    Also: encode/decode cost per record, Foundation's JSONEncoder/JSONDecoder next to Levee's
    direct writer (RecordJSONWriter), on the benchmark's own jobs and the records they lead to.

    Goals (issues 7, 12): burst without trace events ≥ 0.5× the raw produce rate; p99 ack under
    10 ms at a steady 10,000 jobs/s; workers fed by a live stream ≥ 0.8× their backlog rate.
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
        /// Phase B: workers' finish rate while the burst arrived, and on the backlog left after it.
        var liveJobsPerSecond: Double?
        var backlogJobsPerSecond: Double?
        var backlogJobs: Int?
        var backlogSeconds: Double?
        /// Phase A: jobs per JobClient.submit([JobEnvelope]) call (nil: one job per call).
        var batch: Int?
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
        var codec: [CodecFigure]
        /// Phase A (batch API) without trace events ÷ raw produce (same message count and size).
        var submitToRaw: Double
        /// Phase A (batch API) with the trace event (2 records per job) ÷ raw produce.
        var submitWithTraceToRaw: Double
        /// Phase A one job per call (K in flight), without and with the trace event, ÷ raw.
        var singleSubmitToRaw: Double
        var singleSubmitWithTraceToRaw: Double
        /// Phase B: live rate during the burst ÷ backlog rate of the same workers.
        var liveToBacklog: Double?
        /// Phase B: workers' finish rate during the paced stream ÷ their backlog rate in the burst phase.
        var streamToBacklog: Double?
        var goals: [Goal]
    }

    static func run(_ arguments: inout Arguments) async throws {
        let jobs = try arguments.option("--jobs", as: Int.self) ?? 100_000
        let window = try arguments.option("--window", as: Int.self) ?? 1000
        let batchSize = try arguments.option("--batch", as: Int.self) ?? 10_000
        let rate = try arguments.option("--rate", as: Double.self) ?? 10_000
        let steadySeconds = try arguments.option("--steady-seconds", as: Double.self) ?? 10
        let liveRate = try arguments.option("--live-rate", as: Double.self)
        let workerCount = try arguments.option("--workers", as: Int.self) ?? 2
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 32
        let (brokers, properties) = try BenchCluster.parse(&arguments)
        let json = arguments.flag("--json")
        try arguments.finish()
        guard (1...10_000_000).contains(jobs) else { throw CommandFailure.usage("--jobs expects 1...10000000") }
        guard (1...100_000).contains(window) else { throw CommandFailure.usage("--window expects 1...100000") }
        guard (1...1_000_000).contains(batchSize) else { throw CommandFailure.usage("--batch expects 1...1000000") }
        guard rate.isFinite, rate > 0, rate <= 1_000_000 else { throw CommandFailure.usage("--rate expects a rate above 0 and at most 1000000 jobs/s") }
        guard steadySeconds.isFinite, steadySeconds > 0, steadySeconds <= 3600 else { throw CommandFailure.usage("--steady-seconds expects more than 0 and at most 3600") }
        if let liveRate, !(liveRate.isFinite && liveRate > 0 && liveRate <= 1_000_000) {
            throw CommandFailure.usage("--live-rate expects a rate above 0 and at most 1000000 jobs/s")
        }
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

        let codec = try codecFigures(count: min(jobs, 20_000))
        var phases: [Phase] = []
        // A: burst, no worker: batch API and one at a time, with the client's trace event and without.
        for (batched, traceEvents) in [(true, true), (true, false), (false, true), (false, false)] {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("submit-a"), partitions: partitions)
            let client = try JobClient(connection: connection, writesTraceEvents: traceEvents)
            try await client.prepare()
            let name = (batched ? "burst-batch" : "burst") + (traceEvents ? "" : "-no-trace")
            let result = batched
                ? try await batchBurst(client: client, count: jobs, batch: batchSize, progress: progress, label: "A " + name)
                : try await burst(client: client, count: jobs, window: window, progress: progress, label: "A " + name)
            try await client.close()
            let label = (batched ? "A: burst, batch API" : "A: burst, one at a time") + (traceEvents ? "" : ", no trace")
            phases.append(Phase(name: name, label: label,
                                jobs: jobs, accepted: result.latencies.count, seconds: rounded(result.seconds, 3),
                                jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                ackMs: LatencyFigures(result.latencies), traceEvents: traceEvents, workers: 0,
                                batch: batched ? batchSize : nil))
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

        // B: the same burst while workers consume in this process; then a live stream paced below
        // the workers' backlog rate (what a fed worker sees in production: jobs arriving at a rate
        // it can keep up with, not a burst that takes this machine's two cores from it).
        if workerCount > 0 {
            let b = try await withWorkers(cluster: cluster, partitions: partitions, workerCount: workerCount, progress: progress) { client, status in
                try await burst(client: client, count: jobs, window: window, progress: progress, label: "B with workers", status: status)
            }
            phases.append(Phase(name: "burst-with-workers", label: "B: burst, \(workerCount) workers running",
                                jobs: jobs, accepted: b.result.latencies.count, seconds: rounded(b.result.seconds, 3),
                                jobsPerSecond: (Double(b.result.latencies.count) / b.result.seconds).rounded(),
                                ackMs: LatencyFigures(b.result.latencies), traceEvents: true, workers: workerCount,
                                workerJobsDone: b.done, liveJobsPerSecond: b.live.rounded(), backlogJobsPerSecond: b.backlog.rounded(),
                                backlogJobs: b.drain.jobs, backlogSeconds: rounded(b.drain.seconds, 3)))
            let streamRate = liveRate ?? (b.backlog > 0 ? (0.9 * b.backlog).rounded() : 500)
            let count = max(1, Int(streamRate * steadySeconds))
            let s = try await withWorkers(cluster: cluster, partitions: partitions, workerCount: workerCount, progress: progress) { client, _ in
                try await paced(client: client, count: count, rate: streamRate, maxInFlight: max(window, 10_000), progress: progress)
            }
            phases.append(Phase(name: "stream-with-workers", label: String(format: "B: stream %.0f jobs/s, %d workers", streamRate, workerCount),
                                jobs: count, accepted: s.result.latencies.count, seconds: rounded(s.result.seconds, 3),
                                jobsPerSecond: (Double(s.result.latencies.count) / s.result.seconds).rounded(),
                                ackMs: LatencyFigures(s.result.latencies), traceEvents: true, workers: workerCount,
                                workerJobsDone: s.done, liveJobsPerSecond: s.live.rounded(), backlogJobsPerSecond: b.backlog.rounded(),
                                backlogJobs: s.drain.jobs, backlogSeconds: rounded(s.drain.seconds, 3),
                                targetRate: streamRate, pacerMaxLagMs: rounded(s.result.maxLagMs, 3)))
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
        func phaseRate(_ name: String) -> Double { phases.first { $0.name == name }!.jobsPerSecond }
        func toRaw(_ name: String) -> Double { rawRate > 0 ? rounded(phaseRate(name) / rawRate) : 0 }
        let steady = phases.first { $0.name == "steady" }!
        let ratio = toRaw("burst-batch-no-trace")
        var goals = [Goal(goal: "burst (batch API, one record per job) ≥ 0.5× raw librdkafka produce", value: ratio, met: ratio >= 0.5)]
        goals.append(Goal(goal: String(format: "p99 ack < 10 ms at a steady %.0f jobs/s", rate), value: steady.ackMs.p99,
                          met: steady.ackMs.p99 < 10 && steady.jobsPerSecond >= 0.95 * rate))
        var liveToBacklog: Double?, streamToBacklog: Double?
        if let b = phases.first(where: { $0.name == "burst-with-workers" }), let live = b.liveJobsPerSecond,
           let backlog = b.backlogJobsPerSecond, backlog > 0 {
            liveToBacklog = rounded(live / backlog)
            if let st = phases.first(where: { $0.name == "stream-with-workers" }), let streamLive = st.liveJobsPerSecond {
                streamToBacklog = rounded(streamLive / backlog)
                goals.append(Goal(goal: "workers fed by a live stream ≥ 0.8× their backlog rate", value: streamToBacklog!, met: streamToBacklog! >= 0.8))
            }
        }
        let report = Report(
            cluster: cluster.label, jobs: jobs, window: window, partitions: partitions, envelopeBytes: envelopeBytes,
            producerProperties: producerProperties,
            workers: "in-process Worker instances, synthetic engine (zero delay, no model), exactly-once, concurrency 8",
            phases: phases,
            raw: Raw(messages: raw.messages, size: envelopeBytes, seconds: rounded(raw.seconds, 3), messagesPerSecond: rawRate.rounded()),
            codec: codec,
            submitToRaw: ratio, submitWithTraceToRaw: toRaw("burst-batch"),
            singleSubmitToRaw: toRaw("burst-no-trace"), singleSubmitWithTraceToRaw: toRaw("burst"),
            liveToBacklog: liveToBacklog, streamToBacklog: streamToBacklog, goals: goals)
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

    struct WithWorkers {
        var result: BurstResult
        /// Jobs the workers finished while the submits ran.
        var done: Int
        /// What was left when the submits ended, and the time the same workers took to finish it.
        var drain: (jobs: Int, seconds: Double)
        var live: Double { Double(done) / result.seconds }
        var backlog: Double { drain.jobs > 0 ? Double(drain.jobs) / drain.seconds : 0 }
    }

    /// Runs `submit` on fresh topics while `workerCount` in-process workers (synthetic engine at
    /// zero delay, exactly-once) consume them, then lets the workers finish the rest.
    static func withWorkers(cluster: BenchCluster, partitions: Int, workerCount: Int, progress: BenchProgress,
                            submit: (JobClient, @escaping @Sendable () -> String) async throws -> BurstResult) async throws -> WithWorkers {
        let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("submit-b"), partitions: partitions)
        let workers = BenchJobs.workers(workerCount, connection: connection, engine: try BenchJobs.syntheticEngine(),
                                        concurrency: 8, delivery: .exactlyOnce,
                                        shortFetchWait: cluster.embedded != nil)
        let client = try JobClient(connection: connection)
        try await client.prepare()
        let clock = ContinuousClock()
        let outcome = try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in workers { group.addTask { try await worker.run() } }
            progress.report("submit: waiting for \(workerCount) workers to join", force: true)
            guard try await BenchJobs.waitUntilReady(workers) else {
                for worker in workers { worker.shutdown() }
                throw CommandFailure.failed("the workers did not get partitions within 60 s")
            }
            let result = try await submit(client) {
                "; workers finished \(workers.reduce(0) { $0 + $1.statistics.terminal }), received \(workers.reduce(0) { $0 + $1.statistics.received })"
            }
            let done = workers.reduce(0) { $0 + $1.statistics.terminal }
            // The backlog left after the submits, drained by the same workers (bounded wait).
            let drainStart = clock.now
            var finished = done
            while finished < result.latencies.count, clock.now - drainStart < .seconds(300) {
                try await Task.sleep(for: .milliseconds(20))
                finished = workers.reduce(0) { $0 + $1.statistics.terminal }
                progress.report("submit: B backlog: workers finished \(finished)/\(result.latencies.count)")
            }
            let drain = (jobs: finished - done, seconds: (clock.now - drainStart).benchSeconds)
            progress.report("submit: stopping the workers", force: true)
            for worker in workers { worker.shutdown() }
            try await group.waitForAll()
            return WithWorkers(result: result, done: done, drain: drain)
        }
        try await client.close()
        return outcome
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

    /// Submits `count` jobs through the batch API, `batch` per call; each job's latency is its call's.
    static func batchBurst(client: JobClient, count: Int, batch: Int, progress: BenchProgress, label: String) async throws -> BurstResult {
        let clock = ContinuousClock()
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        var failures = 0
        let start = clock.now
        var next = 0
        while next < count {
            let t = clock.now
            let jobs = (next..<min(next + batch, count)).map(BenchJobs.make)
            next += jobs.count
            let results = await client.submit(jobs)
            let ms = (clock.now - t).milliseconds
            for result in results {
                if case .success = result { latencies.append(ms) } else { failures += 1 }
            }
            progress.report("submit: \(label): \(latencies.count)/\(count) acknowledged" + (failures > 0 ? ", \(failures) failed" : ""))
        }
        return BurstResult(latencies: latencies, seconds: (clock.now - start).benchSeconds)
    }

    /// Encode/decode cost of one record, Foundation next to the direct writer.
    struct CodecFigure: Codable {
        var record: String
        var bytes: Int
        var foundationEncodeMicroseconds: Double
        var writerEncodeMicroseconds: Double
        var foundationDecodeMicroseconds: Double
    }

    static func codecFigures(count: Int) throws -> [CodecFigure] {
        let clock = ContinuousClock()
        func measure<T: Codable>(_ name: String, _ values: [T], _ write: (T) throws -> [UInt8]) throws -> CodecFigure {
            var t = clock.now
            var encoded: [Data] = []
            encoded.reserveCapacity(values.count)
            for v in values { encoded.append(try LeveeJSON.foundationEncode(v)) }
            let foundation = (clock.now - t).milliseconds * 1000 / Double(values.count)
            t = clock.now
            var bytes = 0
            for v in values { bytes &+= try write(v).count }
            let writer = (clock.now - t).milliseconds * 1000 / Double(values.count)
            t = clock.now
            for d in encoded { _ = try LeveeJSON.decode(T.self, from: d) }
            let decode = (clock.now - t).milliseconds * 1000 / Double(values.count)
            return CodecFigure(record: name, bytes: bytes / values.count, foundationEncodeMicroseconds: rounded(foundation, 2),
                               writerEncodeMicroseconds: rounded(writer, 2), foundationDecodeMicroseconds: rounded(decode, 2))
        }
        let jobs = (0..<count).map(BenchJobs.make)
        let worker = WorkerIdentity(id: "bench-w1", host: "localhost", pid: 4242)
        let events = jobs.map { TraceEvent(jobID: $0.jobID, stage: .received, attempt: 1, traceparent: $0.traceparent, worker: worker,
                                           topic: "levee.jobs", partition: 3, offset: 123_456, generation: 7) }
        let results = jobs.map { ResultRecord(jobID: $0.jobID, status: .succeeded, attempt: 1, tenant: $0.tenant, model: $0.model,
                                              output: ResultOutput(text: "the synthetic engine wrote sixteen words of text for this job here ok",
                                                                   finishReason: "length", promptTokens: 24, completionTokens: 16),
                                              worker: worker, submittedAt: $0.submittedAt,
                                              timings: ResultTimings(queueMs: 12, inferenceMs: 0, totalMs: 15),
                                              traceparent: $0.traceparent, metadata: $0.metadata) }
        return [try measure("job", jobs) { try $0.jsonBytes() },
                try measure("trace event (received)", events) { $0.jsonBytes() },
                try measure("result (succeeded)", results) { $0.jsonBytes() }]
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
            if let batch = p.batch { text += "  (\(batch) per call)" }
            text += "\n"
        }
        text += "raw librdkafka produce (C API)".padding(toLength: 38, withPad: " ", startingAt: 0)
        text += String(format: " %10.0f   (%d × %d B in %.2f s)\n", r.raw.messagesPerSecond, r.raw.messages, r.raw.size, r.raw.seconds)
        text += String(format: "burst ÷ raw: batch API %.2f× without trace event, %.2f× with it; one at a time %.2f× / %.2f×\n",
                       r.submitToRaw, r.submitWithTraceToRaw, r.singleSubmitToRaw, r.singleSubmitWithTraceToRaw)
        if let b = r.phases.first(where: { $0.name == "burst-with-workers" }), let live = b.liveJobsPerSecond, let backlog = b.backlogJobsPerSecond {
            text += String(format: "B workers: %.0f jobs/s while the burst arrived, %.0f jobs/s on the backlog after it (%d jobs in %.2f s): live ÷ backlog %.2f×\n",
                           live, backlog, b.backlogJobs ?? 0, b.backlogSeconds ?? 0, r.liveToBacklog ?? 0)
        }
        if let st = r.phases.first(where: { $0.name == "stream-with-workers" }), let live = st.liveJobsPerSecond {
            text += String(format: "B stream: %.0f jobs/s arriving, workers finished %.0f jobs/s meanwhile (%d left at its end, done %.2f s later): stream ÷ backlog %.2f×\n",
                           st.jobsPerSecond, live, st.backlogJobs ?? 0, st.backlogSeconds ?? 0, r.streamToBacklog ?? 0)
        }
        text += "codec, µs per record           bytes  JSONEncoder  writer  JSONDecoder\n"
        for c in r.codec {
            text += c.record.padding(toLength: 30, withPad: " ", startingAt: 0)
            text += String(format: " %6d %12.2f %7.2f %12.2f\n", c.bytes, c.foundationEncodeMicroseconds, c.writerEncodeMicroseconds, c.foundationDecodeMicroseconds)
        }
        text += "workers: \(r.workers)\n"
        for g in r.goals { text += "goal: \(g.goal): \(g.value) — \(g.met ? "met" : "NOT met")\n" }
        return text
    }
}
