import Foundation
import Kafka
import Pipeline

/// `levee bench trace`: how long `levee trace` takes on a small and a large trace topic. The
/// design says the read starts near the job's submit time, so the answer should not grow with
/// the number of jobs traced.
enum TraceBench {
    static let summary = "Time of levee trace on a small vs a large trace topic"
    static let help = """
    Usage: levee bench trace [--small N] [--large N] [--samples S] [--interval-ms I] [--partitions P]
                             [--brokers LIST] [-X key=value]... [--json]

    Fills two pipelines (different topic prefixes) with the records finished jobs leave behind,
    written straight through the producer (no workers): per job six trace events (submitted,
    accepted, received, inference_started, inference_finished, result_committed) as TraceEvent
    JSON keyed by the job id, and its result in the results topic. Job ids are UUIDv7s one
    every I ms (the newest job is now), and each record carries its event's time as its
    timestamp, as if written live. Then it times TraceReader.trace (what `levee trace` runs) for
    S jobs of each topic, spread evenly from the oldest to the newest, and reports the median and
    90th percentile, the newest and the oldest job separately, and the trace records scanned.

    Options:
      --small N        jobs in the small topic (default 1000)
      --large N        jobs in the large topic (default 100000)
      --samples S      jobs traced per topic (default 20, at least 2: the oldest and the newest)
      --interval-ms I  time between two jobs (default 250: four jobs a second)
      --partitions P   partitions per topic (default 96; the embedded cluster keeps only about
                       5 MiB per partition, and 100,000 jobs leave ~300 MB of trace events)
      --brokers LIST   use these Kafka brokers instead of the embedded cluster
      -X key=value     librdkafka property for every client (repeatable)
      --json           one JSON object instead of the table (progress still on stderr)

    Goal (issue 7): the time stays flat from 1,000 to 100,000 traced jobs.
    """

    struct Sample: Codable {
        /// 0 is the oldest job, jobs − 1 the newest.
        var index: Int
        var ageSeconds: Double
        var milliseconds: Double
        var recordsScanned: Int
        var eventsFound: Int
        var state: String
    }

    struct Topic: Codable {
        var name: String
        var jobs: Int
        var traceRecords: Int
        var resultRecords: Int
        var fillSeconds: Double
        var samples: [Sample]
        var traceMs: LatencyFigures
        var newestMs: Double
        var oldestMs: Double
        var recordsScannedMedian: Int
        var recordsScannedMax: Int
        /// Samples whose trace came back with all six events and the succeeded result.
        var complete: Int
    }

    struct Report: Codable {
        var cluster: String
        var partitions: Int
        var intervalMs: Int
        var eventsPerJob: Int
        var topics: [Topic]
        /// Large ÷ small, median against median.
        var largeToSmallMedian: Double
        var largeToSmallNewest: Double
        var largeToSmallOldest: Double
    }

    static let stages: [(TraceStage, Int64)] = [
        (.submitted, 0), (.accepted, 3), (.received, 40), (.inferenceStarted, 41), (.inferenceFinished, 1800), (.resultCommitted, 1830),
    ]

    static func run(_ arguments: inout Arguments) async throws {
        let small = try arguments.option("--small", as: Int.self) ?? 1000
        let large = try arguments.option("--large", as: Int.self) ?? 100_000
        let samples = try arguments.option("--samples", as: Int.self) ?? 20
        let interval = try arguments.option("--interval-ms", as: Int.self) ?? 250
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 96
        let (brokers, properties) = try BenchCluster.parse(&arguments)
        let json = arguments.flag("--json")
        try arguments.finish()
        guard (1...10_000_000).contains(small) else { throw CommandFailure.usage("--small expects 1...10000000") }
        guard (1...10_000_000).contains(large) else { throw CommandFailure.usage("--large expects 1...10000000") }
        guard (2...1000).contains(samples) else { throw CommandFailure.usage("--samples expects 2...1000") }
        guard (1...3_600_000).contains(interval) else { throw CommandFailure.usage("--interval-ms expects 1...3600000") }
        guard (1...1000).contains(partitions) else { throw CommandFailure.usage("--partitions expects 1...1000") }
        let cluster = try BenchCluster.start(brokers: brokers, properties: properties)
        if cluster.embedded != nil {
            let eventBytes: Double = Double(max(small, large)) * Double(stages.count) * 450
            let perPartition: Double = eventBytes / Double(partitions)
            let limit: Double = 4 * 1_048_576
            if perPartition > limit {
                let bytes: Double = Double(max(small, large)) * Double(stages.count) * 450
                let needed = Int((bytes / limit).rounded(.up))
                throw CommandFailure.usage("the embedded cluster keeps only about 5 MiB per partition: use --partitions \(needed) or more for \(max(small, large)) jobs")
            }
        }
        let progress = BenchProgress()

        var topics: [Topic] = []
        for (name, jobs) in [("small", small), ("large", large)] {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("trace-" + name), partitions: partitions)
            let fillStart = ContinuousClock.now
            let ids = try await fill(connection, jobs: jobs, intervalMs: Int64(interval), progress: progress, label: name)
            let fillSeconds = (ContinuousClock.now - fillStart).benchSeconds
            try await checkNothingTrimmed(connection, partitions: partitions)
            let now = Timestamp.now()
            // Evenly spread, always with the oldest (0) and the newest (jobs − 1).
            let picks = (0..<samples).map { k in jobs == 1 ? 0 : Int((Double(k) * Double(jobs - 1) / Double(samples - 1)).rounded()) }
            var results: [Sample] = []
            for index in picks {
                let id = ids[index]
                let clock = ContinuousClock()
                let start = clock.now
                let trace = try await TraceReader.trace(connection, jobID: id)
                let ms = (clock.now - start).milliseconds
                results.append(Sample(index: index, ageSeconds: rounded(Double(id.embeddedTime!.milliseconds(until: now)) / 1000, 1),
                                      milliseconds: rounded(ms, 2), recordsScanned: trace?.recordsScanned ?? 0,
                                      eventsFound: trace?.events.count ?? 0, state: trace?.state ?? "not found"))
                progress.report("trace: \(name): job \(index) traced in \(Int(ms)) ms (\(trace?.recordsScanned ?? 0) records scanned)")
            }
            let scanned = results.map(\.recordsScanned).sorted()
            topics.append(Topic(
                name: name, jobs: jobs, traceRecords: jobs * stages.count, resultRecords: jobs, fillSeconds: rounded(fillSeconds, 2),
                samples: results, traceMs: LatencyFigures(results.map(\.milliseconds)),
                newestMs: results.last!.milliseconds, oldestMs: results.first!.milliseconds,
                recordsScannedMedian: scanned[(scanned.count - 1) / 2], recordsScannedMax: scanned.last!,
                complete: results.filter { $0.eventsFound == stages.count && $0.state == "succeeded" }.count))
        }
        let s = topics[0], l = topics[1]
        func ratio(_ a: Double, _ b: Double) -> Double { b > 0 ? rounded(a / b) : 0 }
        let report = Report(cluster: cluster.label, partitions: partitions, intervalMs: interval, eventsPerJob: stages.count,
                            topics: topics, largeToSmallMedian: ratio(l.traceMs.p50, s.traceMs.p50),
                            largeToSmallNewest: ratio(l.newestMs, s.newestMs), largeToSmallOldest: ratio(l.oldestMs, s.oldestMs))
        if json {
            try printJSON(report)
        } else {
            printOut(table(report))
        }
        withExtendedLifetime(cluster) {}
    }

    /// Writes `jobs` finished jobs' trace events and results, oldest first, in time order.
    static func fill(_ connection: KafkaConnection, jobs: Int, intervalMs: Int64, progress: BenchProgress, label: String) async throws -> [JobID] {
        let layout = connection.layout
        let producer = try KafkaProducer(configuration: connection.configuration(["linger.ms": "20", "batch.size": "1000000"]))
        let client = WorkerIdentity(id: "client", host: "app-7f9c", pid: 4021)
        let workers = (1...4).map { WorkerIdentity(id: "worker-\($0)", host: "gpu-node-\($0)", pid: Int32(1000 + $0)) }
        let now = Timestamp.now().millisecondsSinceEpoch
        let first = now - Int64(jobs - 1) * intervalMs - 1830
        var ids: [JobID] = []
        ids.reserveCapacity(jobs)
        // Events of neighbouring jobs interleave in time: keep a small time-ordered backlog and
        // write out what is older than the next job's submit time.
        var backlog: [(at: Int64, record: ProducerRecord)] = []
        for i in 0..<jobs {
            let submitted = first + Int64(i) * intervalMs
            let id = JobID.make(at: Timestamp(millisecondsSinceEpoch: submitted))
            ids.append(id)
            let key = Array(id.description.utf8)
            let traceparent = TraceParent.make()
            let worker = workers[i % workers.count]
            let jobPartition = KeyPartitioner.partition(for: id, partitions: layout.partitions)
            let offset = Int64(i / layout.partitions)
            for (stage, delay) in stages {
                let at = Timestamp(millisecondsSinceEpoch: submitted + delay)
                var event = TraceEvent(jobID: id, stage: stage, at: at, attempt: 1, traceparent: traceparent,
                                       worker: stage == .submitted || stage == .accepted ? client : worker)
                switch stage {
                case .submitted:
                    event.topic = layout.jobs
                case .accepted, .received:
                    event.topic = layout.jobs
                    event.partition = jobPartition
                    event.offset = offset
                    if stage == .received { event.generation = 3 }
                case .inferenceStarted:
                    event.model = "smollm2-135m"
                case .inferenceFinished:
                    event.model = "smollm2-135m"
                    event.promptTokens = 24
                    event.completionTokens = 48
                    event.durationMs = 1759
                case .resultCommitted:
                    event.topic = layout.results
                    event.status = .succeeded
                default:
                    break
                }
                backlog.append((at.millisecondsSinceEpoch, ProducerRecord(
                    topic: layout.trace, key: key, value: Array(try LeveeJSON.encode(event)), timestampMilliseconds: at.millisecondsSinceEpoch)))
            }
            let completed = Timestamp(millisecondsSinceEpoch: submitted + 1830)
            let result = ResultRecord(
                jobID: id, status: .succeeded, attempt: 1, tenant: "bench", model: "smollm2-135m",
                output: ResultOutput(text: "The capital of France is Paris. It is known for the Eiffel Tower, museums and cafés.",
                                     finishReason: "stop", promptTokens: 24, completionTokens: 48),
                worker: worker, submittedAt: Timestamp(millisecondsSinceEpoch: submitted), completedAt: completed,
                timings: ResultTimings(queueMs: 40, inferenceMs: 1759, totalMs: 1830), traceparent: traceparent)
            backlog.append((completed.millisecondsSinceEpoch, ProducerRecord(
                topic: layout.results, key: key, value: Array(try LeveeJSON.encode(result)), timestampMilliseconds: completed.millisecondsSinceEpoch)))
            let horizon = i == jobs - 1 ? Int64.max : submitted + intervalMs
            backlog.sort { $0.at < $1.at }
            let due = backlog.prefix { $0.at < horizon }
            for item in due { try await producer.sendAndForget(item.record) }
            backlog.removeFirst(due.count)
            progress.report("trace: \(label): \(i + 1)/\(jobs) jobs written")
        }
        try await producer.flush(timeout: .seconds(300))
        try await producer.close()
        return ids
    }

    /// The embedded cluster drops a partition's oldest records beyond ~5 MiB: refuse to measure then.
    static func checkNothingTrimmed(_ connection: KafkaConnection, partitions: Int) async throws {
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        for topic in [connection.layout.trace, connection.layout.results] {
            for p in 0..<partitions {
                let marks = try await consumer.watermarks(TopicPartition(topic, Int32(p)))
                if marks.low > 0 {
                    throw CommandFailure.failed("\(topic)[\(p)] lost its oldest records (low watermark \(marks.low)): use more --partitions")
                }
            }
        }
    }

    static func table(_ r: Report) -> String {
        var text = "Trace: \(r.partitions) partitions, one job every \(r.intervalMs) ms, \(r.eventsPerJob) events per job; \(r.cluster)\n"
        text += "topic   jobs      median    p90    newest  oldest (ms)   records scanned median/max   complete\n"
        for t in r.topics {
            text += t.name.padding(toLength: 7, withPad: " ", startingAt: 0)
            text += String(format: " %-8d %7.1f %7.1f %8.1f %7.1f          %8d / %-8d        %d/%d\n", t.jobs, t.traceMs.p50, t.traceMs.p90,
                           t.newestMs, t.oldestMs, t.recordsScannedMedian, t.recordsScannedMax, t.complete, t.samples.count)
        }
        text += String(format: "large ÷ small: median %.2f×, newest job %.2f×, oldest job %.2f×   (goal: flat)\n",
                       r.largeToSmallMedian, r.largeToSmallNewest, r.largeToSmallOldest)
        return text
    }
}
