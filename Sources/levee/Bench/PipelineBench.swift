import Foundation
import Synchronization
import Inference
import Kafka
import Pipeline

/// `levee bench pipeline`: end-to-end jobs/s through workers running the synthetic engine at zero
/// delay, in exactly-once and at-least-once mode, next to raw librdkafka moving the same messages,
/// plus the per-job time Levee adds on top of the engine.
enum PipelineBench {
    static let summary = "End-to-end jobs/s: exactly-once vs at-least-once workers vs raw librdkafka"
    static let help = """
    Usage: levee bench pipeline [--jobs N] [--workers W] [--concurrency C] [--latency-jobs L]
                                [--latency-rate R] [--partitions P] [--brokers LIST] [-X key=value]... [--json]

    All in one run, each side on fresh topics (its own prefix):
      exactly-once   N jobs are written to the jobs topic first; then W workers (in-process
                     Worker instances, synthetic engine at zero delay — no model) start and drain
                     them, committing results, trace events and input offsets in transactions.
                     jobs/s = N over the time from the first worker holding partitions to the
                     last result read back (read_committed).
      at-least-once  the same N jobs (same bytes) on fresh topics, drained by W workers that
                     produce, flush, then commit offsets (no transactions).
      raw            librdkafka's C API: produce N messages of the jobs' average size, then
                     consume them; jobs/s = N over the two times added (what a minimal
                     consume→produce loop must at least do per job).
    Then, per mode, with the workers still running: L jobs submitted at R jobs/s (light load)
    and their per-job overhead — end-to-end latency minus engine time — p50/p99, two ways:
      produced  result completed_at − submitted_at − timings.inference_ms (the result's clock)
      visible   when this process read the result − submitted_at − inference_ms (includes the
                commit interval: the result is readable once its transaction commits)

    Options:
      --jobs N           jobs per mode (default 20000)
      --workers W        workers (default 2)
      --concurrency C    jobs each worker runs at once (default 8)
      --latency-jobs L   jobs for the overhead figures (default 500; 0 skips them)
      --latency-rate R   their rate in jobs/s (default 100)
      --partitions P     partitions per topic (default 16)
      --brokers LIST     use these Kafka brokers instead of the embedded cluster
      -X key=value       librdkafka property for every client (repeatable)
      --json             one JSON object instead of the table (progress still on stderr)

    Goals (issue 7): exactly-once ≥ 0.5× raw; exactly-once ≥ 0.9× at-least-once.
    The embedded cluster accepts transactions but does not enforce them (KAFKA-HERE.md): the
    exactly-once side does all the transactional work, but the mock's costs are not Kafka's.
    """

    struct Mode: Codable {
        var name: String
        var jobs: Int
        var completed: Int
        var duplicates: Int
        /// From the workers' start to the first one holding partitions (group join).
        var joinSeconds: Double
        var drainSeconds: Double
        var jobsPerSecond: Double
        var transactionsCommitted: Int
        var overheadProducedMs: LatencyFigures?
        var overheadVisibleMs: LatencyFigures?
        var engineMs: LatencyFigures?
    }

    struct Raw: Codable {
        var messages: Int
        var size: Int
        var produceSeconds: Double
        var consumeSeconds: Double
        var produceMessagesPerSecond: Double
        var consumeMessagesPerSecond: Double
        var jobsPerSecond: Double
    }

    struct Report: Codable {
        var cluster: String
        var engine: String
        var workers: Int
        var concurrency: Int
        var partitions: Int
        var jobs: Int
        var envelopeBytes: Int
        var modes: [Mode]
        var raw: Raw
        var exactlyOnceToRaw: Double
        var exactlyOnceToAtLeastOnce: Double
        var atLeastOnceToRaw: Double
        var goals: [SubmitBench.Goal]
    }

    static func run(_ arguments: inout Arguments) async throws {
        let jobs = try arguments.option("--jobs", as: Int.self) ?? 20_000
        let workerCount = try arguments.option("--workers", as: Int.self) ?? 2
        let concurrency = try arguments.option("--concurrency", as: Int.self) ?? 8
        let latencyJobs = try arguments.option("--latency-jobs", as: Int.self) ?? 500
        let latencyRate = try arguments.option("--latency-rate", as: Double.self) ?? 100
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 16
        let (brokers, properties) = try BenchCluster.parse(&arguments)
        let json = arguments.flag("--json")
        try arguments.finish()
        guard (1...1_000_000).contains(jobs) else { throw CommandFailure.usage("--jobs expects 1...1000000") }
        guard (1...64).contains(workerCount) else { throw CommandFailure.usage("--workers expects 1...64") }
        guard (1...1024).contains(concurrency) else { throw CommandFailure.usage("--concurrency expects 1...1024") }
        guard (0...100_000).contains(latencyJobs) else { throw CommandFailure.usage("--latency-jobs expects 0...100000") }
        guard latencyRate.isFinite, latencyRate > 0, latencyRate <= 100_000 else { throw CommandFailure.usage("--latency-rate expects more than 0 and at most 100000") }
        guard (1...1000).contains(partitions) else { throw CommandFailure.usage("--partitions expects 1...1000") }

        let cluster = try BenchCluster.start(brokers: brokers, properties: properties)
        let progress = BenchProgress()
        // The same jobs, as bytes, for every side.
        let envelopes = try (0..<jobs).map { i -> (key: [UInt8], value: [UInt8], traceparent: String) in
            let job = BenchJobs.make(i)
            return (Array(job.jobID.description.utf8), Array(try LeveeJSON.encode(job)), job.traceparent.description)
        }
        let envelopeBytes = envelopes.reduce(0) { $0 + $1.value.count } / jobs
        if cluster.embedded != nil {
            // Results and trace events (4 per job) dominate: keep them under the mock's ~5 MiB per partition.
            let perPartition = Double(jobs + latencyJobs) * 2500 / Double(partitions)
            if perPartition > 4.5 * 1_048_576 {
                let needed = Int((Double(jobs + latencyJobs) * 2500 / (4.5 * 1_048_576)).rounded(.up))
                throw CommandFailure.usage("the embedded cluster keeps only about 5 MiB per partition: use --partitions \(needed) or more for \(jobs) jobs")
            }
        }
        let engine = try BenchJobs.syntheticEngine()
        progress.report("pipeline: \(cluster.label); \(jobs) jobs of ~\(envelopeBytes) B, \(workerCount) workers × \(concurrency), synthetic engine (zero delay)", force: true)

        var modes: [Mode] = []
        for delivery in [DeliveryGuarantee.exactlyOnce, .atLeastOnce] {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("pipeline-" + delivery.rawValue), partitions: partitions)
            try await preload(envelopes, connection: connection, progress: progress)
            let mode = try await drain(connection: connection, delivery: delivery, jobs: jobs, workerCount: workerCount,
                                       concurrency: concurrency, engine: engine, latencyJobs: latencyJobs,
                                       latencyRate: latencyRate, shortFetchWait: cluster.embedded != nil, progress: progress)
            modes.append(mode)
        }

        // Raw: the same number of messages of the same size, produced then consumed.
        let rawTopic = BenchCluster.uniquePrefix("pipeline-raw") + "jobs"
        try await cluster.createTopic(rawTopic, partitions: partitions)
        progress.report("pipeline: raw librdkafka produce + consume of \(jobs) × \(envelopeBytes) B", force: true)
        let producerProperties = SubmitBench.rawProducerProperties(properties)
        let consumerProperties = KafkaBench.consumerProperties(producerProperties)
        let bootstrap = cluster.bootstrapServers
        let produced = try await KafkaBench.onThread {
            try RawBaseline.produce(bootstrapServers: bootstrap, topic: rawTopic, messages: jobs, size: envelopeBytes,
                                    properties: producerProperties)
        }
        let consumed = try await KafkaBench.onThread {
            try RawBaseline.consume(bootstrapServers: bootstrap, topic: rawTopic, partitions: partitions, messages: jobs,
                                    properties: consumerProperties)
        }
        let rawSeconds = produced.seconds + consumed.seconds
        let raw = Raw(messages: jobs, size: envelopeBytes, produceSeconds: rounded(produced.seconds, 3),
                      consumeSeconds: rounded(consumed.seconds, 3), produceMessagesPerSecond: produced.messagesPerSecond.rounded(),
                      consumeMessagesPerSecond: consumed.messagesPerSecond.rounded(), jobsPerSecond: (Double(jobs) / rawSeconds).rounded())

        let eo = modes[0].jobsPerSecond, alo = modes[1].jobsPerSecond
        let eoToRaw = raw.jobsPerSecond > 0 ? rounded(eo / raw.jobsPerSecond) : 0
        let eoToAlo = alo > 0 ? rounded(eo / alo) : 0
        let report = Report(
            cluster: cluster.label, engine: "synthetic (zero delay, no model), in-process Worker instances",
            workers: workerCount, concurrency: concurrency, partitions: partitions, jobs: jobs, envelopeBytes: envelopeBytes,
            modes: modes, raw: raw, exactlyOnceToRaw: eoToRaw, exactlyOnceToAtLeastOnce: eoToAlo,
            atLeastOnceToRaw: raw.jobsPerSecond > 0 ? rounded(alo / raw.jobsPerSecond) : 0,
            goals: [SubmitBench.Goal(goal: "exactly-once ≥ 0.5× raw produce+consume", value: eoToRaw, met: eoToRaw >= 0.5),
                    SubmitBench.Goal(goal: "exactly-once ≥ 0.9× at-least-once", value: eoToAlo, met: eoToAlo >= 0.9)])
        if json {
            try printJSON(report)
        } else {
            printOut(table(report))
        }
        let lost = modes.filter { $0.completed < $0.jobs }
        withExtendedLifetime(cluster) {}
        if !lost.isEmpty {
            throw CommandFailure.failed("not every job got a result: " + lost.map { "\($0.name) \($0.completed)/\($0.jobs)" }.joined(separator: ", "))
        }
    }

    /// Writes the jobs to the jobs topic with a plain producer (as JobClient would, keyed by id).
    static func preload(_ envelopes: [(key: [UInt8], value: [UInt8], traceparent: String)], connection: KafkaConnection,
                        progress: BenchProgress) async throws {
        progress.report("pipeline: writing \(envelopes.count) jobs to \(connection.layout.jobs)", force: true)
        let producer = try KafkaProducer(configuration: connection.configuration(["linger.ms": "5"]))
        for e in envelopes {
            try await producer.sendAndForget(ProducerRecord(topic: connection.layout.jobs, key: e.key, value: e.value,
                                                            headers: [KafkaHeader("traceparent", e.traceparent)]))
        }
        try await producer.flush(timeout: .seconds(120))
        try await producer.close()
    }

    static func drain(connection: KafkaConnection, delivery: DeliveryGuarantee, jobs: Int, workerCount: Int, concurrency: Int,
                      engine: any InferenceEngine, latencyJobs: Int, latencyRate: Double, shortFetchWait: Bool,
                      progress: BenchProgress) async throws -> Mode {
        let counter = try await ResultCounter(connection: connection, shortFetchWait: shortFetchWait)
        let workers = BenchJobs.workers(workerCount, connection: connection, engine: engine, concurrency: concurrency, delivery: delivery,
                                        shortFetchWait: shortFetchWait)
        let clock = ContinuousClock()
        return try await withThrowingTaskGroup(of: Void.self) { group -> Mode in
            group.addTask { try await counter.run() }
            let started = clock.now
            for worker in workers { group.addTask { try await worker.run() } }
            // The clock starts when the first worker holds partitions (it may start work at once).
            while !workers.contains(where: \.isReady) {
                if clock.now - started > .seconds(60) { throw CommandFailure.failed("no worker got partitions within 60 s") }
                try await Task.sleep(for: .milliseconds(5))
            }
            let ready = clock.now
            var finished = ready
            while true {
                let done = counter.count
                if done >= jobs { finished = clock.now; break }
                let elapsed = (clock.now - ready).benchSeconds
                progress.report(String(format: "pipeline: %@: %d/%d results · %.1f s · %.0f jobs/s", delivery.rawValue, done, jobs,
                                       elapsed, Double(done) / max(elapsed, 0.001)))
                if clock.now - ready > .seconds(600) { finished = clock.now; break }
                try await Task.sleep(for: .milliseconds(5))
            }
            let drained = counter.count
            let transactions = workers.reduce(0) { $0 + $1.statistics.transactionsCommitted }

            // Light load: per-job overhead.
            var produced: [Double] = [], visible: [Double] = [], engineTimes: [Double] = []
            if latencyJobs > 0 && drained >= jobs {
                progress.report("pipeline: \(delivery.rawValue): \(latencyJobs) jobs at \(Int(latencyRate))/s for the overhead", force: true)
                let client = try JobClient(connection: connection)
                try await client.prepare()
                counter.track(true)
                var ids: [JobID] = []
                let start = clock.now
                for i in 0..<latencyJobs {
                    try await Task.sleep(until: start + .nanoseconds(Int64(Double(i) * 1e9 / latencyRate)), clock: .continuous)
                    ids.append(try await client.submit(BenchJobs.make(jobs + i)).jobID)
                }
                let deadline = clock.now + .seconds(60)
                while counter.count < jobs + latencyJobs && clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                try await client.close()
                let seen = counter.tracked
                for id in ids {
                    guard let (record, seenAt) = seen[id], let submitted = record.submittedAt else { continue }
                    let engineMs = Double(record.timings?.inferenceMs ?? 0)
                    produced.append(Double(submitted.milliseconds(until: record.completedAt)) - engineMs)
                    visible.append(Double(submitted.milliseconds(until: seenAt)) - engineMs)
                    engineTimes.append(engineMs)
                }
            }
            for worker in workers { worker.shutdown() }
            for _ in workers { try await group.next() }
            await counter.close()
            group.cancelAll()
            let drainSeconds = (finished - ready).benchSeconds
            return Mode(name: delivery.rawValue, jobs: jobs, completed: min(drained, jobs), duplicates: counter.duplicates,
                        joinSeconds: rounded((ready - started).benchSeconds, 3), drainSeconds: rounded(drainSeconds, 3),
                        jobsPerSecond: (Double(min(drained, jobs)) / drainSeconds).rounded(), transactionsCommitted: transactions,
                        overheadProducedMs: produced.isEmpty ? nil : LatencyFigures(produced),
                        overheadVisibleMs: visible.isEmpty ? nil : LatencyFigures(visible),
                        engineMs: engineTimes.isEmpty ? nil : LatencyFigures(engineTimes))
        }
    }

    /// Counts distinct job ids in the results topic (read_committed, all partitions, no group).
    /// Lean on purpose: it reads only keys while the bench measures throughput, and decodes
    /// records only for the latency jobs (`track`).
    final class ResultCounter: Sendable {
        private struct State {
            var seen = Set<[UInt8]>()
            var duplicates = 0
            var tracking = false
            var tracked: [JobID: (ResultRecord, Timestamp)] = [:]
        }
        private let consumer: KafkaConsumer
        private let state = Mutex(State())

        init(connection: KafkaConnection, shortFetchWait: Bool) async throws {
            let topic = connection.layout.results
            let admin = try KafkaAdmin(configuration: connection.configuration())
            let count = try await admin.describeTopic(topic).partitionCount
            var settings = ["isolation.level": "read_committed"]
            if shortFetchWait { settings["fetch.wait.max.ms"] = "10" }  // see BenchJobs.workers
            consumer = try KafkaConsumer(configuration: connection.configuration(settings), bufferCapacity: 10_000)
            try consumer.assign((0..<count).map { TopicPartitionOffset(topic, Int32($0), offset: KafkaOffset.beginning) })
        }

        func run() async throws {
            for try await message in consumer.messages {
                guard let key = message.key else { continue }
                let tracking = state.withLock { s -> Bool in
                    if !s.seen.insert(key).inserted { s.duplicates += 1 }
                    return s.tracking
                }
                if tracking, let value = message.value, let record = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) {
                    let now = Timestamp.now()
                    state.withLock { s in if s.tracked[record.jobID] == nil { s.tracked[record.jobID] = (record, now) } }
                }
            }
        }

        var count: Int { state.withLock { $0.seen.count } }
        var duplicates: Int { state.withLock { $0.duplicates } }
        var tracked: [JobID: (ResultRecord, Timestamp)] { state.withLock { $0.tracked } }
        func track(_ on: Bool) { state.withLock { $0.tracking = on } }
        func close() async { await consumer.close() }
    }

    static func table(_ r: Report) -> String {
        var text = "Pipeline: \(r.jobs) jobs of ~\(r.envelopeBytes) B, \(r.workers) workers × \(r.concurrency), \(r.partitions) partitions\n"
        text += "engine: \(r.engine); \(r.cluster)\n"
        text += "side              jobs/s   drain s  join s  txns   overhead p50/p99 (produced)  (visible)\n"
        for m in r.modes {
            text += m.name.padding(toLength: 15, withPad: " ", startingAt: 0)
            text += String(format: " %8.0f %9.2f %7.2f %5d", m.jobsPerSecond, m.drainSeconds, m.joinSeconds, m.transactionsCommitted)
            if let p = m.overheadProducedMs, let v = m.overheadVisibleMs {
                text += String(format: "   %6.1f / %6.1f ms      %6.1f / %6.1f ms", p.p50, p.p99, v.p50, v.p99)
            }
            if m.completed < m.jobs || m.duplicates > 0 { text += "  (\(m.completed)/\(m.jobs) results, \(m.duplicates) duplicates)" }
            text += "\n"
        }
        text += "raw librdkafka".padding(toLength: 15, withPad: " ", startingAt: 0)
        text += String(format: " %8.0f   (produce %.0f msg/s in %.2f s + consume %.0f msg/s in %.2f s)\n", r.raw.jobsPerSecond,
                       r.raw.produceMessagesPerSecond, r.raw.produceSeconds, r.raw.consumeMessagesPerSecond, r.raw.consumeSeconds)
        text += String(format: "exactly-once ÷ raw %.2f×   exactly-once ÷ at-least-once %.2f×   at-least-once ÷ raw %.2f×\n",
                       r.exactlyOnceToRaw, r.exactlyOnceToAtLeastOnce, r.atLeastOnceToRaw)
        for g in r.goals { text += "goal: \(g.goal): \(g.value) — \(g.met ? "met" : "NOT met")\n" }
        return text
    }
}
