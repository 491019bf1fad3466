import Foundation
import Synchronization
import Inference
import Kafka
import Pipeline

/// `levee demo`: the whole pipeline in one process, on the embedded cluster, with the real model.
enum DemoCommand: LeveeCommand {
    static let name = "demo"
    static let summary = "Run the pipeline end to end on an embedded cluster with the real model"
    static let help = """
    Usage: levee demo [--jobs N] [--workers W] [--concurrency C] [--max-tokens M] [--model PATH] [--json]

    Starts an embedded Kafka cluster (librdkafka's mock cluster, in memory), creates Levee's
    topics, runs W workers with the local model, submits N chat jobs in one burst (varied
    prompts), shows progress while they drain, and ends with a summary: submitted, succeeded,
    failed, expired, cancelled, duplicates, lost, submit latency p50/p99, end-to-end latency
    p50/p99, tokens/s, two sample answers, one job's whole path (as `levee trace` shows it) and
    the reconciler's verdict. Exits 0 only if every job has exactly one result and the reconciler
    finds the pipeline consistent.

      --jobs N          jobs in the burst (default 20)
      --workers W       workers (default 2); in this process they share one loaded model,
                        whose scheduler batches their jobs together
      --concurrency C   jobs each worker runs at once (default 4)
      --max-tokens M    tokens per answer (default 48)
      --model PATH      the GGUF file (default: the one scripts/setup fetched)   [LEVEE_MODEL]
      --timeout S       give up waiting after S seconds (default 600)
      --json            the summary as one JSON object (progress still goes to stderr)
      --http ADDR:PORT  serve each worker's /metrics /healthz /readyz while the demo runs: worker i
                        on PORT+i-1 (port 0: any free ports); the addresses are printed on stderr
      --linger S        keep the workers and their endpoints up S seconds after the burst
                        (default 0; SIGTERM or Ctrl-C ends the wait early)

    The embedded cluster does not enforce Kafka transactions (see KAFKA-HERE.md); run the
    workers against Apache Kafka (compose.yaml) for the full exactly-once guarantee.
    """

    static let prompts = [
        "What is the capital of France?", "Give me three tips for staying focused.", "Explain photosynthesis in one sentence.",
        "Write a haiku about the sea.", "What is 12 times 7?", "Name a famous painting and its painter.",
        "How do I boil an egg?", "What does a compiler do?", "Suggest a name for a grey cat.",
        "Why is the sky blue?", "What is the largest planet in our solar system?", "Translate 'good morning' into Spanish.",
        "Give one reason to learn to swim.", "What is a prime number?", "Describe a rainy day in one sentence.",
        "What is the boiling point of water in Celsius?", "Recommend a hobby for a quiet evening.", "What do bees make?",
        "Who wrote Romeo and Juliet?", "What is the opposite of 'ancient'?",
    ]

    struct Summary: Encodable {
        var submitted: Int
        var succeeded: Int
        var failed: Int
        var expired: Int
        var cancelled: Int
        var duplicates: Int
        var lost: Int
        var workers: Int
        var submitLatencyMs: Percentiles
        var endToEndLatencyMs: Percentiles
        var completionTokens: Int
        var tokensPerSecond: Double
        var drainSeconds: Double
        var samples: [Sample]
        /// The reconciler's pass after the burst, and one job's whole path as `levee trace` shows it.
        var reconcile: ReconcileReport? = nil
        var trace: JobTrace? = nil
        enum CodingKeys: String, CodingKey {
            case reconcile, trace
            case submitted, succeeded, failed, expired, cancelled, duplicates, lost, workers
            case submitLatencyMs = "submit_latency_ms", endToEndLatencyMs = "end_to_end_latency_ms"
            case completionTokens = "completion_tokens", tokensPerSecond = "tokens_per_second", drainSeconds = "drain_seconds", samples
        }
    }
    struct Percentiles: Encodable { var p50: Double; var p99: Double }
    struct Sample: Encodable { var question: String; var answer: String; var worker: String?; var jobID: JobID
        enum CodingKeys: String, CodingKey { case question, answer, worker, jobID = "job_id" } }

    static func percentiles(_ values: [Double]) -> Percentiles {
        let sorted = values.sorted()
        func at(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return sorted[min(sorted.count - 1, Int((q * Double(sorted.count - 1)).rounded()))]
        }
        return Percentiles(p50: (at(0.5) * 10).rounded() / 10, p99: (at(0.99) * 10).rounded() / 10)
    }

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let jobs = try arguments.option("--jobs", as: Int.self) ?? 20
        let workerCount = try arguments.option("--workers", as: Int.self) ?? 2
        let concurrency = try arguments.option("--concurrency", as: Int.self) ?? 4
        let maxTokens = try arguments.option("--max-tokens", as: Int.self) ?? 48
        let timeout = try arguments.option("--timeout", as: Double.self) ?? 600
        let modelPath = try arguments.option("--model")
        let http = try arguments.option("--http")
        let linger = try arguments.option("--linger", as: Double.self) ?? 0
        try arguments.finish()
        guard linger >= 0, linger.isFinite else { throw CommandFailure.usage("--linger expects seconds ≥ 0") }
        var httpBase: HTTPListenerAddress?
        if let http {
            do { httpBase = try HTTPListenerAddress(parsing: http) } catch { throw CommandFailure.usage("--http: \(error)") }
        }
        guard (1...100_000).contains(jobs) else { throw CommandFailure.usage("--jobs expects 1...100000") }
        guard (1...64).contains(workerCount) else { throw CommandFailure.usage("--workers expects 1...64") }
        guard (1...256).contains(concurrency) else { throw CommandFailure.usage("--concurrency expects 1...256") }
        guard (1...4096).contains(maxTokens) else { throw CommandFailure.usage("--max-tokens expects 1...4096") }

        let path: String
        do { path = try ModelLocation.resolve(explicit: modelPath) } catch { throw CommandFailure.failed("\(error)") }
        printError("demo: loading \(path)")
        let engine: LocalGGUFEngine
        do { engine = try LocalGGUFEngine(path: path, maxBatch: max(16, workerCount * concurrency)) } catch { throw CommandFailure.failed("\(error)") }
        let modelName = EngineOptions.friendlyName(path)

        let cluster = try EmbeddedCluster(brokers: 1)
        let layout = TopicLayout(prefix: "demo.", partitions: max(4, workerCount * 2))
        let connection = KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: layout)
        _ = try TopicProvisioner.ensureTopics(layout, on: cluster)
        printError("demo: embedded Kafka at \(cluster.bootstrapServers), \(layout.partitions) partitions, \(workerCount) workers × \(concurrency) jobs")

        let workers = (0..<workerCount).map { i -> Worker in
            var c = WorkerConfiguration(workerID: "demo-w\(i + 1)")
            c.groupID = "demo.levee-workers"
            c.concurrency = concurrency
            c.logEvents = false
            c.heartbeatInterval = .seconds(1)
            c.limits.knownModels = [modelName, engine.modelID]
            // The embedded mock holds an empty fetch for fetch.wait.max.ms (500 ms by default) even
            // when records arrive meanwhile; Kafka answers at once. Keep the demo's queue time honest.
            c.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "10"]
            return Worker(connection: connection, configuration: c, engine: engine)
        }
        var listeners: [HTTPListener] = []
        defer { listeners.forEach { $0.stop() } }
        if let httpBase {
            for (i, worker) in workers.enumerated() {
                let port = httpBase.port == 0 ? 0 : httpBase.port + UInt16(i)
                let listener = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: httpBase.host, port: port)))
                listener.serveOperations(metrics: worker.metrics.registry) { worker.readiness }
                do {
                    let bound = try listener.start()
                    printError("demo: \(worker.configuration.workerID) serves /metrics /healthz /readyz on http://\(bound.host):\(bound.port)")
                } catch { throw CommandFailure.failed("\(error)") }
                listeners.append(listener)
            }
        }
        let client = try JobClient(connection: connection)
        let collector = try await ResultCollector(connection: connection)
        try await client.prepare()

        var summary = try await withThrowingTaskGroup(of: Void.self) { group -> Summary in
            for w in workers { group.addTask { try await w.run() } }
            group.addTask { try await collector.run() }
            // Wait for the group to form so the burst lands on working partitions.
            let formed = ContinuousClock.now
            while workers.contains(where: { !$0.isReady }) && ContinuousClock.now - formed < .seconds(30) {
                try await Task.sleep(for: .milliseconds(50))
            }
            printError("demo: workers ready; submitting \(jobs) jobs in a burst")
            let burstStart = ContinuousClock.now
            var receipts: [SubmitReceipt] = []
            var questions: [JobID: String] = [:]
            try await withThrowingTaskGroup(of: (SubmitReceipt, String).self) { submit in
                for i in 0..<jobs {
                    let question = prompts[i % prompts.count]
                    let job = JobClient.makeJob(tenant: "demo", kind: .chat, model: modelName,
                                                input: JobInput(messages: [ChatTurn(role: "user", content: question)]),
                                                params: JobParameters(maxTokens: maxTokens, temperature: 0.7, seed: UInt64(i)))
                    submit.addTask { (try await client.submit(job), question) }
                }
                for try await (receipt, question) in submit {
                    receipts.append(receipt)
                    questions[receipt.jobID] = question
                }
            }
            let burst = (ContinuousClock.now - burstStart).milliseconds
            printError("demo: \(jobs) jobs accepted in \(String(format: "%.0f", burst)) ms; draining…")
            let ids = Set(receipts.map(\.jobID))
            let drainStart = ContinuousClock.now
            let lastLine = Mutex(ContinuousClock.now - .seconds(1))
            let missing = await collector.waitFor(ids, timeout: .milliseconds(Int64(timeout * 1000))) { done in
                let now = ContinuousClock.now
                let due = lastLine.withLock { last -> Bool in
                    guard now - last >= .seconds(1) else { return false }
                    last = now
                    return true
                }
                if due || done == ids.count {
                    let seconds = (now - drainStart).milliseconds / 1000
                    let tokens = collector.snapshot.results.values.reduce(0) { $0 + ($1.output?.completionTokens ?? 0) }
                    printError(String(format: "demo: %d/%d done · %.1f s · %.1f jobs/s · %.0f tokens/s", done, ids.count, seconds,
                                      Double(done) / max(seconds, 0.001), Double(tokens) / max(seconds, 0.001)))
                }
            }
            let drainSeconds = (ContinuousClock.now - drainStart).milliseconds / 1000
            // A moment for any late duplicate to show up before counting.
            try await Task.sleep(for: .milliseconds(500))
            if linger > 0 {
                let stop = StopFlag()
                try await withTerminationSignals({ stop.set() }) {
                    // Printed once the handlers are in place: a SIGTERM after this line ends the wait.
                    printError("demo: burst done; workers and their endpoints stay up for \(linger) s (SIGTERM or Ctrl-C ends it)")
                    let end = ContinuousClock.now + .milliseconds(Int64(linger * 1000))
                    while !stop.isSet && ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(100)) }
                }
            }
            for w in workers { w.shutdown() }
            for _ in workers { try await group.next() }
            let snap = collector.snapshot
            await collector.close()
            group.cancelAll()

            let ours = ids.compactMap { snap.results[$0] }
            func count(_ s: JobStatus) -> Int { ours.filter { $0.status == s }.count }
            let e2e = ids.compactMap { id -> Double? in
                guard let r = snap.results[id], let submitted = r.submittedAt else { return nil }
                return Double(submitted.milliseconds(until: r.completedAt))
            }
            let tokens = ours.reduce(0) { $0 + ($1.output?.completionTokens ?? 0) }
            let samples = ours.filter { $0.status == .succeeded }.sorted { $0.jobID < $1.jobID }.prefix(2).map {
                Sample(question: questions[$0.jobID] ?? "", answer: $0.output?.text ?? "", worker: $0.worker?.id, jobID: $0.jobID)
            }
            return Summary(submitted: ids.count, succeeded: count(.succeeded), failed: count(.failed), expired: count(.expired),
                           cancelled: count(.cancelled), duplicates: ids.reduce(0) { $0 + (snap.duplicates[$1] ?? 0) },
                           lost: missing.count, workers: workerCount, submitLatencyMs: percentiles(receipts.map(\.ackMilliseconds)),
                           endToEndLatencyMs: percentiles(e2e), completionTokens: tokens,
                           tokensPerSecond: (Double(tokens) / max(drainSeconds, 0.001) * 10).rounded() / 10,
                           drainSeconds: (drainSeconds * 100).rounded() / 100, samples: Array(samples))
        }
        try await client.close()

        // Audit the burst as an operator would: `levee reconcile --once`, then `levee trace` of one job.
        let reconciler = Reconciler(connection: connection, configuration: .init(group: "demo.levee-workers"))
        summary.reconcile = try await reconciler.pass()
        await reconciler.close()
        if let first = summary.samples.isEmpty ? nil : summary.samples[0].jobID {
            summary.trace = try await TraceReader.trace(connection, jobID: first)
        }

        if json {
            try printJSON(summary)
        } else {
            printOut("""

            Levee demo — \(summary.submitted) jobs, \(summary.workers) workers, embedded Kafka, \(modelName)
              submitted   \(summary.submitted)
              succeeded   \(summary.succeeded)
              failed      \(summary.failed)
              expired     \(summary.expired)
              cancelled   \(summary.cancelled)
              duplicates  \(summary.duplicates)
              lost        \(summary.lost)
              submit latency      p50 \(summary.submitLatencyMs.p50) ms   p99 \(summary.submitLatencyMs.p99) ms
              end-to-end latency  p50 \(summary.endToEndLatencyMs.p50) ms   p99 \(summary.endToEndLatencyMs.p99) ms
              throughput          \(summary.tokensPerSecond) tokens/s (\(summary.completionTokens) tokens in \(summary.drainSeconds) s)

            """)
            for s in summary.samples {
                printOut("  Q: \(s.question)\n  A: \(s.answer.trimmingCharacters(in: .whitespacesAndNewlines))\n\n")
            }
            if let trace = summary.trace {
                printOut("One job's path (levee trace \(trace.jobID)):\n" + TraceCommand.render(trace) + "\n")
            }
            if let report = summary.reconcile {
                printOut("Reconciler (levee reconcile --once): \(report.verdict)\n")
            }
        }
        if summary.lost > 0 || summary.duplicates > 0 {
            throw CommandFailure.failed("\(summary.lost) lost and \(summary.duplicates) duplicate results")
        }
        if let report = summary.reconcile, !report.consistent {
            throw CommandFailure.failed("the reconciler found the pipeline inconsistent: \(report.verdict)")
        }
    }
}
