import Foundation
import Synchronization
import Inference
import Kafka
import Pipeline

/// `levee bench <what>`: measurements that back the numbers in BENCHMARKS.md.
/// Each benchmark lives in its own file as an enum with `summary`, `help` and `run`.
enum BenchCommand: LeveeCommand {
    static let name = "bench"
    static let summary = "Run a benchmark (kafka, inference, submit, pipeline, trace, reconcile, gateway)"

    private static let benchmarks: [(name: String, summary: String, help: String, run: @Sendable (inout Arguments) async throws -> Void)] = [
        ("kafka", KafkaBench.summary, KafkaBench.help, { try await KafkaBench.run(&$0) }),
        ("inference", InferenceBench.summary, InferenceBench.help, { try await InferenceBench.run(&$0) }),
        ("submit", SubmitBench.summary, SubmitBench.help, { try await SubmitBench.run(&$0) }),
        ("pipeline", PipelineBench.summary, PipelineBench.help, { try await PipelineBench.run(&$0) }),
        ("trace", TraceBench.summary, TraceBench.help, { try await TraceBench.run(&$0) }),
        ("reconcile", ReconcileBench.summary, ReconcileBench.help, { try await ReconcileBench.run(&$0) }),
        ("gateway", GatewayBench.summary, GatewayBench.help, { try await GatewayBench.run(&$0) }),
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

// MARK: - Shared by the pipeline-level benchmarks (submit, pipeline, trace)

/// The cluster a pipeline benchmark runs against: an embedded one (librdkafka's mock, in this
/// process) unless `--brokers` names a real one. Every phase gets its own topic prefix.
struct BenchCluster: Sendable {
    let embedded: EmbeddedCluster?
    let bootstrapServers: String
    let properties: [String: String]

    /// Reads `--brokers` and `-X key=value` (repeatable).
    static func parse(_ arguments: inout Arguments) throws -> (brokers: String?, properties: [String: String]) {
        let brokers = try arguments.option("--brokers")
        let properties = try ConnectionOptions.parseProperties(&arguments)
        if let brokers, brokers.isEmpty { throw CommandFailure.usage("--brokers expects host:port[,host:port…]") }
        return (brokers, properties)
    }

    static func start(brokers: String?, properties: [String: String]) throws -> BenchCluster {
        if let brokers {
            return BenchCluster(embedded: nil, bootstrapServers: brokers, properties: properties)
        }
        do {
            let cluster = try EmbeddedCluster(brokers: 1)
            return BenchCluster(embedded: cluster, bootstrapServers: cluster.bootstrapServers, properties: properties)
        } catch {
            throw CommandFailure.failed("could not start the embedded cluster: \(error)")
        }
    }

    /// What the benchmark ran against, for the report.
    var label: String {
        embedded == nil ? "Kafka at \(bootstrapServers)" : "embedded cluster (librdkafka 2.0.2 mock, 1 broker, in this process)"
    }

    /// A connection with Levee's topics created under `prefix`.
    func connection(prefix: String, partitions: Int) async throws -> KafkaConnection {
        let layout = TopicLayout(prefix: prefix, partitions: partitions)
        let connection = KafkaConnection(bootstrapServers: bootstrapServers, properties: properties, layout: layout)
        do {
            if let embedded {
                _ = try TopicProvisioner.ensureTopics(layout, on: embedded)
            } else {
                _ = try await TopicProvisioner.ensureTopics(connection)
            }
        } catch {
            throw CommandFailure.failed("could not create the topics under prefix '\(prefix)': \(error)")
        }
        return connection
    }

    /// Creates one plain topic (for the raw librdkafka baselines).
    func createTopic(_ name: String, partitions: Int) async throws {
        if let embedded {
            try embedded.createTopic(name, partitions: partitions)
        } else {
            let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrapServers, properties))
            _ = try await admin.createTopics([NewTopic(name: name, partitions: Int32(partitions), replicationFactor: -1, configs: [:])])
        }
    }

    /// A prefix no earlier run used (real clusters keep topics between runs).
    static func uniquePrefix(_ phase: String) -> String {
        "bench.\(phase).\(UInt32.random(in: 0...UInt32.max)).".lowercased()
    }
}

/// Latency percentiles in milliseconds.
struct LatencyFigures: Codable, Sendable {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ values: [Double]) {
        let sorted = values.sorted()
        count = sorted.count
        func at(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            // Nearest rank: the smallest value with at least q of the samples at or below it.
            let rank = Int((q * Double(sorted.count)).rounded(.up))
            return Self.round(sorted[min(sorted.count - 1, Swift.max(0, rank - 1))])
        }
        p50 = at(0.5)
        p90 = at(0.9)
        p99 = at(0.99)
        p999 = at(0.999)
        max = Self.round(sorted.last ?? 0)
        mean = Self.round(sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count))
    }

    static func round(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

    var line: String {
        String(format: "p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms", p50, p99, p999, max)
    }
}

/// Progress lines on stderr, at most one a second.
final class BenchProgress: Sendable {
    private let last = Mutex(ContinuousClock.now)
    let enabled: Bool

    init(enabled: Bool = true) { self.enabled = enabled }

    func report(_ line: @autoclosure () -> String, force: Bool = false) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let due = last.withLock { last -> Bool in
            guard force || now - last >= .seconds(1) else { return false }
            last = now
            return true
        }
        if due { printError(line()) }
    }
}

enum BenchJobs {
    static let prompts = [
        "Summarise the attached meeting notes in three bullet points for the weekly newsletter.",
        "Write a friendly product description for a stainless steel water bottle that keeps drinks cold.",
        "Translate 'the order has shipped and will arrive on Thursday' into Spanish and French.",
        "Suggest five names for a small bakery that specialises in sourdough bread.",
        "Explain in two sentences why the sky looks blue during the day and red at sunset.",
    ]

    /// A realistic chat job for the synthetic engine (16 words of output).
    static func make(_ index: Int) -> JobEnvelope {
        JobClient.makeJob(tenant: "bench", kind: .chat, model: "synthetic",
                          input: JobInput(messages: [ChatTurn(role: "user", content: prompts[index % prompts.count])]),
                          params: JobParameters(maxTokens: 16, temperature: 0, seed: UInt64(index)),
                          metadata: ["source": "levee-bench", "n": String(index)])
    }

    /// The synthetic engine at zero delay: what the benchmarks measure is Levee, not a model.
    static func syntheticEngine() throws -> SyntheticEngine {
        try SyntheticEngine(configuration: .init(delay: .fixed(.zero), tokensPerRequest: 16))
    }

    /// In-process workers on `connection`'s topics.
    ///
    /// `shortFetchWait` is for the embedded cluster: librdkafka 2.0.2's mock does not answer a
    /// waiting fetch when new records arrive, so every fetch that finds nothing new holds the
    /// consumer for `fetch.wait.max.ms` (500 ms by default) and a job submitted to an idle worker
    /// waits up to that long before it is even read. Kafka answers as soon as data arrives.
    static func workers(_ count: Int, connection: KafkaConnection, engine: any InferenceEngine, concurrency: Int,
                        delivery: DeliveryGuarantee, shortFetchWait: Bool) -> [Worker] {
        (0..<count).map { i in
            var c = WorkerConfiguration(workerID: "\(connection.layout.prefix)w\(i + 1)")
            c.groupID = connection.layout.prefix + "workers"
            c.concurrency = concurrency
            c.delivery = delivery
            c.logEvents = false
            c.heartbeatInterval = .seconds(1)
            c.limits.knownModels = [engine.modelID]
            c.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]
            if shortFetchWait { c.consumerProperties["fetch.wait.max.ms"] = "10" }
            return Worker(connection: connection, configuration: c, engine: engine)
        }
    }

    /// Waits until every worker holds partitions (or `timeout` passes); returns whether they all do.
    static func waitUntilReady(_ workers: [Worker], timeout: Duration = .seconds(60)) async throws -> Bool {
        let started = ContinuousClock.now
        while workers.contains(where: { !$0.isReady }) {
            if ContinuousClock.now - started > timeout { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var benchSeconds: Double { milliseconds / 1000 }
}

/// Rounds for reports: `places` decimals.
func rounded(_ value: Double, _ places: Int = 2) -> Double {
    let scale = pow(10, Double(places))
    return (value * scale).rounded() / scale
}
