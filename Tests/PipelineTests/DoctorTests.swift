import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// `levee doctor`'s checks: on the embedded cluster (brokers, topics present, partition counts,
/// transactions), on noida-db (topic configs, which the mock cluster does not have), and the pure
/// rules (SHA-256, replication, memory) and the OpenAI backend check against a local HTTP server.
@Suite(.serialized) struct DoctorTests {
    static func configuration(_ connection: KafkaConnection, engine: DoctorConfiguration.Engine = .synthetic) -> DoctorConfiguration {
        DoctorConfiguration(connection: connection, engine: engine, concurrency: 4, timeout: .seconds(3))
    }

    static func freshPrefix() -> String { "d\(UUID().uuidString.prefix(8).lowercased())." }

    // MARK: Embedded cluster

    @Test(.timeLimit(.minutes(1))) func provisionedTopicsOnTheEmbeddedClusterPass() async throws {
        let h = try PipelineHarness(partitions: 4)
        let report = await Doctor.run(Self.configuration(h.connection))
        #expect(report.ok, "failed: \(report.checks(.fail))")
        #expect(report.checks(.fail).isEmpty)
        #expect(report.check("librdkafka")?.status == .ok)
        #expect(report.check("librdkafka")?.detail.contains(KafkaLibrary.version) == true)
        #expect(report.check("brokers")?.status == .ok)
        for spec in h.connection.layout.specs {
            let check = try #require(report.check("topic \(spec.name)"))
            #expect(check.status == .ok, "\(check)")
            #expect(check.detail.hasPrefix("\(spec.partitions) partition"))
        }
        // The mock has no DescribeConfigs: said so, not silently passed.
        #expect(report.check("topic configs")?.status == .skip)
        #expect(report.check("replication")?.status == .warn)
        #expect(report.check("replication")?.detail.contains("development only") == true)
        #expect(report.check("transactions")?.status == .ok)
        #expect(report.check("model")?.status == .skip)
        #expect(report.counts["fail"] == 0 && report.counts["ok"]! >= 10)
        // The JSON form round-trips.
        let decoded = try JSONDecoder().decode(DoctorReport.self, from: JSONEncoder().encode(report))
        #expect(decoded == report && decoded.schema == "levee.doctor/v1")
    }

    @Test(.timeLimit(.minutes(1))) func aMissingTopicFailsNamingLeveeTopicsCreate() async throws {
        let cluster = try EmbeddedCluster()
        let layout = TopicLayout(prefix: Self.freshPrefix(), partitions: 4)
        for spec in layout.specs where spec.name != layout.results {
            try cluster.createTopic(spec.name, partitions: spec.partitions)
        }
        let report = await Doctor.run(Self.configuration(KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: layout)))
        #expect(!report.ok)
        #expect(report.checks(.fail).map(\.name) == ["topic \(layout.results)"])
        let check = try #require(report.check("topic \(layout.results)"))
        #expect(check.detail.hasPrefix("missing"))
        let fix = try #require(check.fix)
        #expect(fix.hasPrefix("levee topics create --brokers \(cluster.bootstrapServers) --prefix \(layout.prefix) --partitions 4"), "\(fix)")
        #expect(fix.contains("--config cleanup.policy=compact"), "the kafka-topics alternative keeps compaction: \(fix)")
    }

    @Test(.timeLimit(.minutes(1))) func aWrongPartitionCountFails() async throws {
        let cluster = try EmbeddedCluster()
        let layout = TopicLayout(prefix: Self.freshPrefix(), partitions: 6)
        for spec in layout.specs {
            try cluster.createTopic(spec.name, partitions: spec.name == layout.trace ? 2 : spec.partitions)
        }
        let report = await Doctor.run(Self.configuration(KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: layout)))
        #expect(report.checks(.fail).map(\.name) == ["topic \(layout.trace)"])
        let check = try #require(report.check("topic \(layout.trace)"))
        #expect(check.detail == "has 2 partitions; the layout wants 6")
        #expect(check.fix?.contains("--partitions 2 (LEVEE_PARTITIONS)") == true)
        #expect(check.fix?.contains("--alter --topic \(layout.trace) --partitions 6") == true)
    }

    @Test(.timeLimit(.minutes(1))) func unreachableBrokersFailAndSkipTheRest() async throws {
        // A port nothing listens on: the loopback refuses at once, the check is bounded by the timeout.
        let connection = KafkaConnection(bootstrapServers: "127.0.0.1:1", layout: TopicLayout(prefix: Self.freshPrefix()))
        var configuration = Self.configuration(connection)
        configuration.timeout = .seconds(2)
        let report = await Doctor.run(configuration)
        #expect(report.check("brokers")?.status == .fail)
        #expect(report.check("brokers")?.fix?.contains("LEVEE_BROKERS") == true)
        #expect(report.check("transactions")?.status == .skip)
        #expect(report.check("topic \(connection.layout.results)")?.status == .skip)
        let none = await Doctor.run(Self.configuration(KafkaConnection(bootstrapServers: "")))
        #expect(none.check("brokers")?.detail == "no bootstrap servers configured")
    }

    // MARK: noida-db: topic configs

    @Test(.timeLimit(.minutes(1))) func aResultsTopicWithoutCompactionFailsNamingTheFix() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped aResultsTopicWithoutCompactionFailsNamingTheFix: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test starts noida-db and sets it; the embedded cluster has no topic configs)")
            return
        }
        let layout = TopicLayout(prefix: Self.freshPrefix(), partitions: 2)
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        try await admin.createTopics(layout.specs.map { spec in
            var configs = spec.configs
            if spec.name == layout.results { configs = ["cleanup.policy": "delete"] }
            if spec.name == layout.trace { configs["retention.ms"] = "-1" }
            return NewTopic(name: spec.name, partitions: Int32(spec.partitions), replicationFactor: 1, configs: configs)
        }, timeout: .seconds(10))
        let report = await Doctor.run(Self.configuration(KafkaConnection(bootstrapServers: bootstrap, layout: layout)))
        #expect(report.checks(.fail).map(\.name) == ["topic \(layout.results)"])
        let results = try #require(report.check("topic \(layout.results)"))
        #expect(results.detail.hasPrefix("cleanup.policy=delete, not compact"))
        #expect(results.fix == "kafka-configs.sh --bootstrap-server \(bootstrap) --alter --entity-type topics --entity-name \(layout.results) --add-config cleanup.policy=compact")
        let trace = try #require(report.check("topic \(layout.trace)"))
        #expect(trace.status == .warn && trace.detail.contains("retention.ms=-1"), "\(trace)")
        #expect(report.check("topic \(layout.jobs)")?.detail == "2 partitions, retention 7 d")
        #expect(report.check("topic \(layout.workers)")?.detail == "1 partition, compacted")
        #expect(report.check("topic configs") == nil, "noida-db answers DescribeConfigs")
        #expect(report.check("replication")?.detail.contains("min.insync.replicas 1") == true)
        #expect(report.check("transactions")?.status == .ok, "noida-db has a real transaction coordinator")

        // After the fix the doctor passes.
        let fixed = TopicLayout(prefix: Self.freshPrefix(), partitions: 2)
        try await admin.createTopics(fixed.specs.map { NewTopic(name: $0.name, partitions: Int32($0.partitions), replicationFactor: 1, configs: $0.configs) })
        let good = await Doctor.run(Self.configuration(KafkaConnection(bootstrapServers: bootstrap, layout: fixed)))
        #expect(good.ok, "\(good.checks(.fail))")
        #expect(good.check("topic \(fixed.results)")?.detail == "2 partitions, compacted")
    }

    // MARK: Replication rules

    @Test func replicationRules() {
        typealias T = KafkaChecks.TopicReplication
        func status(_ brokers: Int, _ rf: Int, _ isr: Int?, underReplicated: [Int32] = []) -> DoctorCheck {
            KafkaChecks.evaluateReplication(brokers: brokers, topics: [T(topic: "levee.results", replicationFactor: rf, minInSyncReplicas: isr, underReplicated: underReplicated)],
                                            bootstrap: "b:9092")
        }
        #expect(status(1, 1, 1).status == .warn && status(1, 1, 1).detail.contains("development only"))
        #expect(status(3, 3, 2).status == .ok)
        #expect(status(5, 3, 2).status == .ok)
        #expect(status(3, 3, nil).status == .ok, "min.insync.replicas unknown: judged on the factor alone")
        let full = status(3, 3, 3)
        #expect(full.status == .fail && full.detail.contains("one broker down stops every write"))
        #expect(full.fix?.contains("--add-config min.insync.replicas=2") == true)
        #expect(status(3, 1, 1).status == .fail, "min.insync.replicas 1 ≥ replication factor 1 on a cluster")
        #expect(status(2, 3, 2).status == .fail && status(2, 3, 2).detail.contains("3 replicas on 2 brokers"))
        #expect(status(3, 2, 1).status == .warn, "2 replicas where 3 brokers could hold 3")
        #expect(status(3, 3, 1).status == .warn && status(3, 3, 1).fix?.contains("min.insync.replicas=2") == true)
        #expect(status(3, 3, 2, underReplicated: [4]).status == .warn)
        #expect(KafkaChecks.evaluateReplication(brokers: 3, topics: [], bootstrap: "b").status == .skip)
    }

    // MARK: Model file and SHA-256

    static func temporaryFile(_ bytes: [UInt8], name: String = "model.gguf") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("levee-doctor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    @Test func sha256OfFilesMatchesTheStandardVectors() throws {
        let vectors: [(String, [UInt8])] = [
            ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", []),
            ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Array("abc".utf8)),
            ("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)),
        ]
        for (expected, bytes) in vectors {
            let path = try Self.temporaryFile(bytes)
            // Chunk sizes that split 64-byte blocks in every way, and one bigger than the file.
            for chunk in [1 << 20, 4097, 63, 1] where chunk > 1 || bytes.count < 10 {
                #expect(try FileDigest.sha256(path: path, chunkSize: chunk) == expected, "\(bytes.count) bytes in chunks of \(chunk)")
            }
        }
        #expect(throws: (any Error).self) { try FileDigest.sha256(path: "/nonexistent/levee/model.gguf") }
    }

    @Test func theDefaultDigestIsTheOneScriptsSetupChecks() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let setup = try String(contentsOf: root.appendingPathComponent("scripts/setup"), encoding: .utf8)
        let line = try #require(setup.split(separator: "\n").first { $0.hasPrefix("MODEL_SHA256=") })
        #expect(line == "MODEL_SHA256=\"\(Doctor.defaultModelSHA256)\"")
    }

    @Test func modelChecks() async throws {
        func modelCheck(_ path: String, sha: String? = nil) async -> DoctorCheck {
            var c = Self.configuration(KafkaConnection(bootstrapServers: ""), engine: .local(modelPath: path, maxBatch: 16))
            c.expectedModelSHA256 = sha
            return await HostChecks(configuration: c).run()[0]
        }
        let missing = await modelCheck("/nonexistent/levee/model.gguf")
        #expect(missing.status == .fail && missing.fix?.contains("scripts/setup") == true)

        // A file under the default model's name but with other bytes: the known digest catches it.
        let wrong = try Self.temporaryFile(Array("not the model".utf8), name: ModelLocation.defaultFileName)
        let wrongCheck = await modelCheck(wrong)
        #expect(wrongCheck.status == .fail)
        let digest = SHA256.hex(of: Array("not the model".utf8))
        #expect(wrongCheck.detail.contains("sha256 \(digest), expected \(Doctor.defaultModelSHA256)"), "\(wrongCheck.detail)")
        #expect(wrongCheck.fix?.contains("--model-sha256 \(digest)") == true)
        // --model-sha256 overrides the default; upper case is fine.
        let pinnedWrong = await modelCheck(wrong, sha: String(repeating: "AB", count: 32))
        #expect(pinnedWrong.status == .fail && pinnedWrong.detail.contains("expected \(String(repeating: "ab", count: 32))"))
        // The right digest for bytes that are not GGUF: the checksum passes, loading fails.
        let notGGUF = await modelCheck(wrong, sha: digest.uppercased())
        #expect(notGGUF.status == .fail && notGGUF.detail.contains("is not a model Levee can run"), "\(notGGUF)")

        // The real model, when this machine has it (scripts/setup put it there).
        let real = ProcessInfo.processInfo.environment["LEVEE_MODEL"].flatMap { $0.isEmpty ? nil : $0 } ?? ModelLocation.defaultPath()
        guard FileManager.default.fileExists(atPath: real) else {
            print("skipped the real-model part of modelChecks: no model at \(real) (scripts/setup fetches it)")
            return
        }
        var c = Self.configuration(KafkaConnection(bootstrapServers: ""), engine: .local(modelPath: real, maxBatch: 16))
        if (real as NSString).lastPathComponent != ModelLocation.defaultFileName { c.expectedModelSHA256 = try FileDigest.sha256(path: real) }
        let checks = await HostChecks(configuration: c).run()
        #expect(checks[0].status == .ok, "\(checks[0])")
        #expect(checks[0].detail.contains("llama, 30 layers"))
        #expect(checks[1].name == "memory" && checks[1].status != .skip, "\(checks[1])")
        #expect(checks[2].status == .skip)
    }

    // MARK: Memory

    @Test func memoryEstimateRules() {
        // SmolLM2-135M: 30 layers × 192 kv dims × 2 × 4 bytes = 46,080 B/token, 8192-token context.
        let e = MemoryEstimate(modelBytes: 98_362_432, kvBytesPerToken: 46_080, contextLength: 8192, sequences: 4)
        #expect(e.cacheBytes(tokens: 1000) == 1024 * 46_080)
        #expect(e.cacheBytes(tokens: 8192) == 8192 * 46_080)
        #expect(e.cacheBytes(tokens: 1) == 16 * 46_080)
        #expect(e.typicalBytes == 98_362_432 + 4 * 1024 * 46_080 + MemoryEstimate.overheadBytes)
        let mib = 1 << 20
        #expect(e.check(available: (8192 * mib, "test"), concurrency: 4).status == .ok)
        let tight = e.check(available: (1024 * mib, "test"), concurrency: 4)
        #expect(tight.status == .warn && tight.fix?.contains("--concurrency 1") == true, "\(tight)")
        let short = e.check(available: (400 * mib, "test"), concurrency: 4)
        #expect(short.status == .fail && short.fix?.contains("lower --concurrency to 0") == false, "\(short)")
        #expect(short.fix?.contains("--concurrency 1") == false && short.detail.contains("not enough for --concurrency 4"))
        let none = e.check(available: (200 * mib, "test"), concurrency: 4)
        #expect(none.status == .fail && none.fix?.hasPrefix("give the worker at least") == true, "\(none)")
        #expect(e.check(available: nil, concurrency: 4).status == .skip)

        #expect(MemoryEstimate.parseMemAvailable("MemTotal:       32000000 kB\nMemFree:  1 kB\nMemAvailable:   24226360 kB\n") == 24_226_360 * 1024)
        #expect(MemoryEstimate.parseMemAvailable("MemTotal: 1 kB\n") == nil)
        let here = MemoryEstimate.availableBytes()
        #expect(here == nil || here!.bytes > 0)
    }

    // MARK: OpenAI-compatible backend

    @Test(.timeLimit(.minutes(1))) func openAIBackendCheck() async throws {
        let listener = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: "127.0.0.1", port: 0)))
        listener.route("/v1/models") { request in
            guard request.headers["authorization"] == "Bearer sk-good" else { return HTTPResponse(status: 401, text: "bad key\n") }
            return HTTPResponse(status: 200, contentType: "application/json",
                                text: #"{"object":"list","data":[{"id":"smollm2","object":"model"},{"id":"llama-3-8b","object":"model"}]}"#)
        }
        let port = try listener.start().port
        defer { listener.stop() }
        func check(_ url: String, model: String, key: String?) async -> DoctorCheck {
            let c = Self.configuration(KafkaConnection(bootstrapServers: ""),
                                       engine: .openAI(baseURL: URL(string: url)!, model: model, apiKey: key, keySource: "TEST_KEY"))
            let checks = await HostChecks(configuration: c).run()
            #expect(checks.map(\.name) == ["model", "memory", "openai backend"])
            return checks[2]
        }
        let good = await check("http://127.0.0.1:\(port)", model: "smollm2", key: "sk-good")
        #expect(good.status == .ok, "\(good)")
        let withV1 = await check("http://127.0.0.1:\(port)/v1/", model: "llama-3-8b", key: "sk-good")
        #expect(withV1.status == .ok, "\(withV1)")
        let unknown = await check("http://127.0.0.1:\(port)", model: "gpt-9", key: "sk-good")
        #expect(unknown.status == .fail && unknown.detail.contains("smollm2, llama-3-8b") && unknown.fix == "--openai-model smollm2 (or another listed above)")
        let refused = await check("http://someone:hunter2@127.0.0.1:\(port)", model: "smollm2", key: "sk-bad-secret")
        #expect(refused.status == .fail && refused.detail.contains("TEST_KEY was refused"), "\(refused)")
        let text = "\(refused.detail) \(refused.fix ?? "")"
        #expect(!text.contains("sk-bad-secret") && !text.contains("hunter2"), "secrets never appear: \(text)")
        let noKey = await check("http://127.0.0.1:\(port)", model: "smollm2", key: nil)
        #expect(noKey.status == .fail && noKey.detail.contains("TEST_KEY is not set"))
        let notThere = await check("http://127.0.0.1:\(port)/api", model: "smollm2", key: "sk-good")
        #expect(notThere.status == .fail && notThere.detail.contains("404"))
        listener.stop()
        let down = await check("http://127.0.0.1:\(port)", model: "smollm2", key: "sk-good")
        #expect(down.status == .fail && down.fix?.contains("reachable") == true, "\(down)")
        let downWithUser = await check("http://someone:hunter2@127.0.0.1:\(port)", model: "smollm2", key: "sk-good")
        #expect(downWithUser.status == .fail && !downWithUser.detail.contains("hunter2"), "\(downWithUser)")
    }
}
