import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// Issue 15: every bad record ends in exactly one failed result or dead letter, whatever its size,
/// and a record the broker refuses never stalls the worker or the rest of its batch.
@Suite(.serialized) struct BadRecordTests {
    /// The records a careless or hostile producer may put on the jobs topic, each keyed by a job id
    /// (so its failed result can name it) unless the point is that it has none.
    struct Corpus {
        struct Entry {
            var name: String
            var key: String
            var value: [UInt8]
            /// Has a UUID key, so a failed result is expected (else only a dead letter).
            var hasJobID: Bool { JobID(string: key) != nil }
        }
        var entries: [Entry] = []

        /// `limit`: the worker's bound for a dead letter (what the 0.5×…2× records are measured against).
        init(limit: Int, job: (JobID) throws -> JobEnvelope) throws {
            func json(_ id: JobID, _ change: (inout [String: Any]) -> Void = { _ in }) throws -> [UInt8] {
                let base = try JSONSerialization.jsonObject(with: try LeveeJSON.encode(try job(id))) as! [String: Any]
                var object = base
                change(&object)
                return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
            }
            func add(_ name: String, _ value: (JobID) throws -> [UInt8]) rethrows {
                let id = JobID.make()
                entries.append(Entry(name: name, key: id.description, value: try value(id)))
            }
            add("invalid JSON") { _ in Array("{\"schema\": levee".utf8) }
            add("invalid UTF-8") { _ in [0xFF, 0xFE, 0x7B, 0x22, 0xC3, 0x28] }
            add("100,000-deep arrays") { _ in Array(String(repeating: "[", count: 100_000).utf8) + Array(String(repeating: "]", count: 100_000).utf8) }
            try add("wrong types") { try json($0) { $0["attempt"] = "one" } }
            add("null") { _ in Array("null".utf8) }
            add("a bare string") { _ in Array("\"hello\"".utf8) }
            try add("unknown schema version") { try json($0) { $0["schema"] = "levee.job/v9" } }
            // Valid JSON text with bytes that are not UTF-8 inside a string.
            try add("invalid UTF-8 in a string") { id in
                let text = String(decoding: try json(id) { $0["model"] = "MODEL_MARK" }, as: UTF8.self)
                let parts = text.components(separatedBy: "MODEL_MARK")
                return Array(parts[0].utf8) + [0xC3, 0x28, 0xFF] + Array(parts[1].utf8)
            }
            try add("a number with 10,000 digits") { id in
                let text = String(decoding: try json(id) { $0["priority"] = 7 }, as: UTF8.self)
                return Array(text.replacingOccurrences(of: "\"priority\":7", with: "\"priority\":1" + String(repeating: "0", count: 10_000)).utf8)
            }
            try add("duplicate keys") { id in
                let text = String(decoding: try json(id), as: UTF8.self)
                return Array(("{\"model\":\"other-model\"," + text.dropFirst()).utf8)
            }
            // A job id that is not a UUID, in the key and in the record: only a dead letter can hold it.
            let notUUID = try json(JobID.make()) { $0["job_id"] = "job-42" }
            entries.append(Entry(name: "job id not a UUID", key: "job-42", value: notUUID))
            // Jobs (otherwise valid) at 0.5×, 0.9×, 1.0× and 2× the dead-letter bound.
            for (name, factor) in [("0.5× the limit", 0.5), ("0.9× the limit", 0.9), ("1.0× the limit", 1.0), ("2× the limit", 2.0)] {
                let size = Int(Double(limit) * factor)
                try add(name) { id in
                    let small = try json(id) { $0["metadata"] = ["pad": "PAD_MARK"] }
                    let text = String(decoding: small, as: UTF8.self)
                    return Array(text.replacingOccurrences(of: "PAD_MARK", with: String(repeating: "p", count: max(0, size - small.count + 8))).utf8)
                }
            }
        }
    }

    /// Runs the corpus against one live worker, with valid jobs interleaved, and checks every
    /// record's end: one failed result (when it has a job id) and one dead letter each, whole or
    /// cut to fit with the original's size and SHA-256, valid jobs succeeded, worker ready,
    /// reconciler consistent.
    static func runCorpus(_ connection: KafkaConnection, configuration: WorkerConfiguration) async throws {
        let worker = Worker(connection: connection, configuration: configuration, engine: ScriptedEngine())
        let limit = RecordLimits(producerProperties: configuration.producerProperties).limit(for: connection.layout.deadLetters)
        let corpus = try Corpus(limit: limit) { id in
            JobEnvelope(jobID: id, tenant: "test", kind: .chat, model: "test-model",
                        input: JobInput(messages: [ChatTurn(role: "user", content: "hi")]), params: JobParameters(maxTokens: 4, temperature: 0))
        }
        let client = try JobClient(connection: connection)
        let collector = try await ResultCollector(connection: connection)
        // Big enough for the 2× record (the jobs topic's producers may have larger limits than the worker's).
        let raw = try KafkaProducer(configuration: connection.configuration(["message.max.bytes": "8000000", "linger.ms": "0"]))
        var valid: [JobID] = []
        var offsets: [String: (partition: Int32, offset: Int64)] = [:]
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            group.addTask { try await collector.run() }
            for entry in corpus.entries {
                let report = try await raw.send(ProducerRecord(topic: connection.layout.jobs, key: Array(entry.key.utf8), value: entry.value))
                offsets[entry.name] = (report.partition, report.offset)
                let job = JobClient.makeJob(tenant: "test", kind: .chat, model: "test-model",
                                            input: JobInput(messages: [ChatTurn(role: "user", content: "after \(entry.name)")]),
                                            params: JobParameters(maxTokens: 4, temperature: 0))
                valid.append(try await client.submit(job).jobID)
            }
            let expected = Set(valid + corpus.entries.compactMap { JobID(string: $0.key) })
            let missing = await collector.waitFor(expected, timeout: .seconds(90))
            #expect(missing.isEmpty, "no result for \(missing.count) of \(expected.count) jobs")
            let results = collector.snapshot.results
            for id in valid { #expect(results[id]?.status == .succeeded, "valid job \(id): \(String(describing: results[id]?.status))") }
            for entry in corpus.entries where entry.hasJobID {
                let result = results[JobID(string: entry.key)!]
                #expect(result?.status == .failed && result?.error?.errorClass == .poisonInput,
                        "\(entry.name): \(String(describing: result?.status)) \(result?.error?.description ?? "")")
            }
            #expect(collector.snapshot.duplicates.isEmpty, "one terminal record per job")

            // Exactly one dead letter per bad record (found by its source offset); the large ones cut to fit.
            var letters: [DeadLetter] = []
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                letters = try await Self.deadLetters(connection)
                if letters.count >= corpus.entries.count { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            for entry in corpus.entries {
                let at = offsets[entry.name]!
                let mine = letters.filter { $0.source.partition == at.partition && $0.sourceOffset == at.offset && $0.source.topic == connection.layout.jobs }
                #expect(mine.count == 1, "\(entry.name): \(mine.count) dead letters")
                guard let letter = mine.first else { continue }
                #expect(letter.originalSize == entry.value.count && letter.originalSHA256 == SHA256.hex(of: entry.value), "\(entry.name)")
                let encoded = try LeveeJSON.encode(letter).count
                #expect(encoded <= limit, "\(entry.name): dead letter of \(encoded) bytes over the \(limit)-byte bound")
                if letter.originalTruncated == true {
                    #expect(entry.value.count * 4 / 3 > limit - 1000, "\(entry.name): cut although it would fit")
                    #expect(Array(letter.original) == Array(entry.value.prefix(letter.original.count)) && letter.original.count > limit / 2)
                } else {
                    #expect(Array(letter.original) == entry.value, "\(entry.name): the whole original")
                }
            }
            #expect(letters.contains { $0.originalTruncated == true }, "the 0.9×–2× records are cut")
            let twice = try #require(corpus.entries.first { $0.name == "2× the limit" })
            let trace = try #require(try await TraceReader.trace(connection, jobID: JobID(string: twice.key)!))
            #expect(trace.diagnosis.contains("first part of the original only"), "\(trace.diagnosis)")
            #expect(trace.events.contains { $0.stage == .deadLettered && $0.detail?.contains("\(twice.value.count) bytes") == true })

            #expect(worker.isReady, "worker ready: \(worker.readiness.reasons)")
            #expect(worker.statistics.deadLettered == corpus.entries.count)
            var rc = Reconciler.Configuration(group: configuration.groupID)
            rc.dryRun = true
            rc.readTimeout = .seconds(60)
            let reconciler = Reconciler(connection: connection, configuration: rc)
            let report = try await reconciler.pass()
            await reconciler.close()
            #expect(report.consistent, "\(report.verdict)")
            #expect(report.dlq.total == corpus.entries.count)

            worker.shutdown()
            try await group.next()
            await collector.close()
            group.cancelAll()
        }
        try await raw.close()
        try await client.close()
    }

    static func deadLetters(_ connection: KafkaConnection) async throws -> [DeadLetter] {
        let admin = try KafkaAdmin(configuration: connection.configuration())
        let partitions = try await admin.describeTopic(connection.layout.deadLetters).partitionCount
        var letters: [DeadLetter] = []
        for p in 0..<partitions {
            let messages = try await KafkaConsumer.readWindow(
                configuration: connection.configuration(["isolation.level": "read_committed"]),
                partition: TopicPartition(connection.layout.deadLetters, Int32(p)), from: KafkaOffset.beginning, maxMessages: 100)
            letters += messages.compactMap { $0.value.flatMap { try? LeveeJSON.decode(DeadLetter.self, from: Data($0)) } }
        }
        return letters
    }

    @Test(.timeLimit(.minutes(4))) func everyBadRecordEndsOnceOnTheEmbeddedCluster() async throws {
        let h = try PipelineHarness(partitions: 4)
        try await Self.runCorpus(h.connection, configuration: h.workerConfiguration("w-bad"))
    }

    @Test(.timeLimit(.minutes(4))) func everyBadRecordEndsOnceOnNoida() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped everyBadRecordEndsOnceOnNoida: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test sets it; or start one with scripts/noida)")
            return
        }
        let layout = TopicLayout(prefix: "b\(UUID().uuidString.prefix(8).lowercased()).", partitions: 2)
        let connection = KafkaConnection(bootstrapServers: bootstrap, layout: layout)
        // The jobs topic takes records up to 8 MB (a producer may write larger jobs than the worker
        // accepts); the dead-letter topic keeps the broker's default limit.
        let admin = try KafkaAdmin(configuration: connection.configuration())
        _ = try await admin.createTopics([NewTopic(name: layout.jobs, partitions: 2, replicationFactor: 1,
                                                   configs: ["max.message.bytes": "8000000"])])
        _ = try await TopicProvisioner.ensureTopics(connection)
        var c = WorkerConfiguration(workerID: "w-bad-noida")
        c.groupID = layout.prefix + "workers"
        c.commitInterval = .milliseconds(50)
        c.heartbeatInterval = .milliseconds(500)
        c.logEvents = ProcessInfo.processInfo.environment["LEVEE_TEST_LOGS"] != nil
        c.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]
        try await Self.runCorpus(connection, configuration: c)
    }

    // MARK: - Outputs too large for their topic

    /// A result too large for the results topic (a job's metadata is echoed into its result) and a
    /// retry too large for the retry topic: each job ends in one failed result of class
    /// `record_rejected` that fits, and the jobs around them succeed.
    @Test(.timeLimit(.minutes(2))) func oversizeResultsAndRetriesBecomeFailures() async throws {
        let h = try PipelineHarness(partitions: 1)
        var config = h.workerConfiguration("w-out")
        config.producerProperties = ["message.max.bytes": "30000"]
        let bigPrompt = String(repeating: "r", count: 29_000)
        let worker = Worker(connection: h.connection, configuration: config, engine: ScriptedEngine(failures: [bigPrompt: 1]))
        try await WorkerEmbeddedTests.withWorkers(h, [worker]) { client, collector in
            let before = try await client.submit(h.chatJob("before"))
            let echoed = try await client.submit(h.chatJob("echo my metadata") { $0.metadata = ["blob": String(repeating: "m", count: 40_000)] })
            let retried = try await client.submit(h.chatJob(bigPrompt))
            let after = try await client.submit(h.chatJob("after"))
            let ids: Set = [before.jobID, echoed.jobID, retried.jobID, after.jobID]
            #expect(await collector.waitFor(ids, timeout: .seconds(60)).isEmpty)
            let r = collector.snapshot.results
            #expect(r[before.jobID]?.status == .succeeded && r[after.jobID]?.status == .succeeded)
            for (id, topic) in [(echoed.jobID, h.connection.layout.results), (retried.jobID, h.connection.layout.retry)] {
                let error = r[id]?.error
                #expect(r[id]?.status == .failed && error?.errorClass == .recordRejected, "\(String(describing: error))")
                #expect(error?.message.contains("the \(topic) record would be") == true, "\(error?.message ?? "")")
            }
            #expect(collector.snapshot.duplicates.isEmpty)
            let trace = try #require(try await TraceReader.trace(h.connection, jobID: echoed.jobID))
            #expect(trace.state == "failed" && trace.diagnosis.contains("record_rejected: could not write the job's outcome"),
                    "\(trace.diagnosis)")
        }
        #expect(worker.statistics.recordsRefused == 2)
    }

    /// A record the producer refuses while committing (its limit lower than the worker believed):
    /// that job's outcome is rebuilt as a failure, the others in the same batch commit, and the
    /// worker goes on. Without this the commit retried forever and every outcome waited behind it.
    @Test(.timeLimit(.minutes(2)), arguments: [DeliveryGuarantee.exactlyOnce, .atLeastOnce])
    func aRecordRefusedAtCommitDoesNotBlockItsBatch(_ delivery: DeliveryGuarantee) async throws {
        let h = try PipelineHarness(partitions: 1)
        var config = h.workerConfiguration("w-refuse")
        config.delivery = delivery
        config.producerProperties = ["message.max.bytes": "30000"]
        config.commitInterval = .milliseconds(300)  // so the jobs share a batch
        let worker = Worker(connection: h.connection, configuration: config, engine: ScriptedEngine(tokenDelay: .milliseconds(1)))
        try await WorkerEmbeddedTests.withWorkers(h, [worker]) { client, collector in
            // Make the worker believe records may be far larger than its producer takes.
            while !worker.state.withLock({ $0.recordLimitsAsked }) { try await Task.sleep(for: .milliseconds(20)) }
            worker.state.withLock { $0.recordLimits = RecordLimits(producerMaxBytes: 100_000_000) }
            let echoed = try await client.submit(h.chatJob("echo my metadata") { $0.metadata = ["blob": String(repeating: "m", count: 40_000)] })
            let others = [try await client.submit(h.chatJob("one")), try await client.submit(h.chatJob("two"))]
            let ids = Set([echoed.jobID] + others.map(\.jobID))
            #expect(await collector.waitFor(ids, timeout: .seconds(60)).isEmpty)
            let r = collector.snapshot.results
            for o in others { #expect(r[o.jobID]?.status == .succeeded) }
            #expect(r[echoed.jobID]?.status == .failed && r[echoed.jobID]?.error?.errorClass == .recordRejected)
            #expect(r[echoed.jobID]?.error?.message.contains("MSG_SIZE_TOO_LARGE") == true, "\(r[echoed.jobID]?.error?.message ?? "")")
            #expect(collector.snapshot.duplicates[echoed.jobID] == nil)
            if delivery == .atLeastOnce {
                // Without a transaction, only what failed is sent again: the delivered results are not repeated.
                #expect(collector.snapshot.duplicates.isEmpty)
            }  // (exactly-once: the embedded mock shows aborted transactions to read_committed readers, so the
               // aborted first try's results of the other jobs are visible there; noida-db tests the real thing)
            #expect(worker.isReady)
        }
        #expect(worker.statistics.recordsRefused == 1)
        #expect(worker.metrics.commitRetries.value("record_refused") == 1)
    }
}

/// The pieces that keep bad records bounded, without a broker.
@Suite struct BadRecordLogicTests {
    @Test func aDeadLetterKeepsTheWholeOriginalWhenItFitsAndAPrefixWhenNot() throws {
        let source = TopicPartitionRef(topic: "levee.jobs", partition: 3)
        let small = Data("{\"schema\": levee".utf8)
        let whole = DeadLetter.fitting(DeadLetter(jobID: JobID.make(), reason: JobError(.poisonInput, "bad"), original: small,
                                                  source: source, sourceOffset: 9), maxEncodedBytes: 10_000)
        #expect(whole.original == small && whole.originalTruncated == false && whole.originalSize == small.count)
        let big = Data((0..<2_000_082).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let bound = RecordLimits().limit(for: "levee.dlq") - 36
        let cut = DeadLetter.fitting(DeadLetter(jobID: JobID.make(), reason: JobError(.poisonInput, String(repeating: "why ", count: 10_000)),
                                                original: big, source: source, sourceOffset: 9), maxEncodedBytes: bound)
        let encoded = try LeveeJSON.encode(cut)
        #expect(encoded.count <= bound && encoded.count > bound - 2_000, "\(encoded.count) of \(bound)")
        #expect(cut.originalTruncated == true && cut.originalSize == big.count && cut.original == big.prefix(cut.original.count))
        #expect(cut.originalSHA256 == SHA256.hex(of: [UInt8](big)))
        #expect(cut.reason.message.utf8.count < 4_200 && cut.reason.message.hasSuffix("more bytes cut)"))
        let back = try LeveeJSON.decode(DeadLetter.self, from: encoded)
        #expect(back == cut)
    }

    @Test func recordLimitsTakeTheSmallerOfProducerAndTopic() {
        let limits = RecordLimits(producerProperties: ["message.max.bytes": "2000000"], topicMaxBytes: ["levee.dlq": 500_000])
        #expect(limits.limit(for: "levee.dlq") == 500_000 - RecordLimits.batchOverhead)
        #expect(limits.limit(for: "levee.results") == 2_000_000 - RecordLimits.batchOverhead)
        #expect(RecordLimits(producerProperties: [:]).producerMaxBytes == 1_000_000)
        let record = ProducerRecord(topic: "levee.dlq", key: Array(repeating: 1, count: 36), value: Array(repeating: 2, count: 499_500),
                                    headers: [KafkaHeader("traceparent", "x")])
        #expect(RecordLimits.size(of: record) == 36 + 499_500 + 12)
        let fits = limits.fits(record), fitsElsewhere = limits.fits(ProducerRecord(topic: "levee.results", key: record.key, value: record.value))
        #expect(!fits && fitsElsewhere)
    }

    @Test(arguments: [
        (#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#, nil),
        (#"{"a":1,"b":2,"a":3}"#, "a"),
        (#"{"x":{"k":"v","k":"w"}}"#, "k"),
        (#"{"s":"a\",\"s\":1","t":["s","s"]}"#, nil),
        (#"[{"a":1},{"a":1}]"#, nil),
        (#"{"a":[1,{"b":1}],"b":2,"c":{"a":1},"c":2}"#, "c"),
    ] as [(String, String?)])
    func duplicateNamesAreFound(_ text: String, _ duplicate: String?) {
        #expect(JSONNames.firstDuplicate(in: Data(text.utf8)) == duplicate, "\(text)")
    }

    @Test func clippingKeepsWholeCharacters() {
        #expect("héllo".clipped(toBytes: 10) == "héllo")
        let clipped = String(repeating: "é", count: 10).clipped(toBytes: 5)
        #expect(clipped.hasPrefix("éé") && !clipped.hasPrefix("ééé") && clipped.hasSuffix("(16 more bytes cut)"), "\(clipped)")
    }
}
