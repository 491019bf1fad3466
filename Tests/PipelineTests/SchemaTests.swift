import Foundation
import Kafka
import Testing
@testable import Pipeline

/// The examples in schemas/examples must be valid against both the JSON Schemas (checked with
/// python-jsonschema through scripts/schema-check) and the Swift Codable types, and what Swift
/// writes must be valid against the schemas too.
@Suite struct SchemaTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func example(_ name: String) throws -> Data {
        try Data(contentsOf: root.appendingPathComponent("schemas/examples/\(name)"))
    }

    /// Runs scripts/schema-check on JSON lines; returns its output (empty when all are valid).
    static func schemaCheck(_ schema: String, _ documents: [Data]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/schema-check")
        process.arguments = [schema, "-"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        var text = Data()
        for d in documents { text += d + Data("\n".utf8) }
        input.fileHandleForWriting.write(text)
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self))
    }

    static func roundTrip<T: Codable & Equatable>(_ type: T.Type, _ file: String, schema: String) throws -> T {
        let original = try example(file)
        let value = try LeveeJSON.decode(T.self, from: original)
        let encoded = try LeveeJSON.encode(value)
        #expect(try LeveeJSON.decode(T.self, from: encoded) == value, "\(file) changes on a round trip")
        let (status, output) = try schemaCheck(schema, [original, encoded])
        #expect(status == 0, "\(file): \(output)")
        return value
    }

    @Test func jobExamples() throws {
        let chat = try Self.roundTrip(JobEnvelope.self, "job-chat.json", schema: "job")
        #expect(chat.kind == .chat)
        #expect(chat.input.messages?.first?.content == "What is the capital of France?")
        #expect(chat.params.maxTokens == 64 && chat.params.temperature == 0 && chat.params.seed == 7)
        #expect(chat.params.topP == JobParameters().topP, "absent params take defaults")
        #expect(chat.deadline == Timestamp(rfc3339: "2026-11-22T05:20:56Z"))
        try chat.validate()

        let text = try Self.roundTrip(JobEnvelope.self, "job-text-idempotent.json", schema: "job")
        #expect(text.jobID == JobID.derived(tenant: "acme", idempotencyKey: "order-42"),
                "the example's id must be the UUIDv5 that Python's uuid.uuid5 gives")
        #expect(text.params.stop == ["\n\n"] && text.params.topK == 40)
        try text.validate()

        let retry = try Self.roundTrip(JobEnvelope.self, "job-retry.json", schema: "job")
        #expect(retry.attempt == 2 && retry.lastError?.errorClass == .backendUnreachable && retry.notBefore != nil)
    }

    @Test func resultTraceDeadLetterHeartbeatExamples() throws {
        let ok = try Self.roundTrip(ResultRecord.self, "result-succeeded.json", schema: "result")
        #expect(ok.status == .succeeded && ok.output?.completionTokens == 8 && ok.timings?.queueMs == 412)
        let failed = try Self.roundTrip(ResultRecord.self, "result-failed.json", schema: "result")
        #expect(failed.status == .failed && failed.error?.errorClass == .poisonInput)
        let received = try Self.roundTrip(TraceEvent.self, "trace-received.json", schema: "trace-event")
        #expect(received.stage == .received && received.partition == 3 && received.offset == 1187 && received.generation == 12)
        let retry = try Self.roundTrip(TraceEvent.self, "trace-retry.json", schema: "trace-event")
        #expect(retry.stage == .retryScheduled && retry.error?.retriable == true)
        let dead = try Self.roundTrip(DeadLetter.self, "dead-letter.json", schema: "dead-letter")
        #expect(String(decoding: dead.original, as: UTF8.self) == #"{"schema": "levx"}"#)
        #expect(dead.originalTruncated == nil && dead.originalSize == nil, "dead letters from older workers still read")
        let cut = try Self.roundTrip(DeadLetter.self, "dead-letter-truncated.json", schema: "dead-letter")
        #expect(cut.originalTruncated == true && cut.originalSize == 2_000_095 && cut.original.count == 48)
        let beat = try Self.roundTrip(WorkerHeartbeat.self, "worker-heartbeat.json", schema: "worker-heartbeat")
        #expect(beat.assigned.count == 2 && beat.currentJobs.count == 1 && beat.state == .running)
    }

    @Test func reconcileReportExampleAndAReportSwiftWrites() throws {
        let report = try Self.roundTrip(ReconcileReport.self, "reconcile-report.json", schema: "reconcile-report")
        #expect(!report.consistent && report.lost.first?.requeued == true && report.duplicates.first?.records == 2)
        #expect(report.verdict == "INCONSISTENT: 1 lost (requeued), 0 stuck, 1 duplicate, 0 orphans")
        // One the reconciler builds from records: a lost job and a duplicate.
        var state = ReconcilerState()
        let lost = JobID.make(), dup = JobID.make()
        for (i, id) in [lost, dup].enumerated() {
            let job = JobEnvelope(jobID: id, tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"),
                                  submittedAt: Timestamp.now().adding(milliseconds: -600_000))
            state.applyJobRecord(KafkaMessage(topic: "levee.jobs", partition: 0, offset: Int64(i), key: Array(id.description.utf8),
                                              value: Array(try LeveeJSON.encode(job))), retry: false)
        }
        for offset in [Int64(0), 1] {
            state.applyResult(KafkaMessage(topic: "levee.results", partition: 0, offset: offset, key: Array(dup.description.utf8),
                                           value: Array(try LeveeJSON.encode(ResultRecord(jobID: dup, status: .succeeded, attempt: 1)))))
        }
        let built = state.classify(now: .now(), committed: [TopicPartition("levee.jobs", 0): 2], heartbeats: [:], slaMs: 1000,
                                   stuckAfterMs: 1000, group: "g", isolation: "read_committed", retryTopic: "levee.jobs.retry").report
        #expect(built.lost.count == 1 && built.duplicates.count == 1)
        let (status, output) = try Self.schemaCheck("reconcile-report", [try LeveeJSON.encode(built)])
        #expect(status == 0, "\(output)")
    }

    @Test func recordsWrittenBySwiftAreValid() throws {
        let job = JobEnvelope(tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "hi"),
                              deadline: Timestamp.now().adding(milliseconds: 60_000))
        let result = ResultRecord(jobID: job.jobID, status: .expired, attempt: 1,
                                  error: JobError(.deadline, "deadline passed 3 s before the job was received"))
        let event = TraceEvent(jobID: job.jobID, stage: .inferenceFinished, attempt: 1, traceparent: job.traceparent,
                               worker: WorkerIdentity(id: "w", host: "h", pid: 1), model: "m", promptTokens: 3,
                               completionTokens: 9, durationMs: 120)
        for (schema, data) in [("job", try LeveeJSON.encode(job)), ("result", try LeveeJSON.encode(result)),
                               ("trace-event", try LeveeJSON.encode(event))] {
            let (status, output) = try Self.schemaCheck(schema, [data])
            #expect(status == 0, "\(schema): \(output)")
        }
    }

    @Test func schemaRejectsWhatValidationRejects() throws {
        // A succeeded result without output, and a job with an unknown kind, fail the schema.
        let bad1 = Data(#"{"schema":"levee.result/v1","job_id":"019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07","status":"succeeded","attempt":1,"completed_at":"2026-11-22T04:20:57.010Z"}"#.utf8)
        var job = try LeveeJSON.decode(JobEnvelope.self, from: try Self.example("job-chat.json"))
        job.kind = JobKind(rawValue: "image.generate")
        #expect(try Self.schemaCheck("result", [bad1]).0 == 1)
        #expect(try Self.schemaCheck("job", [try LeveeJSON.encode(job)]).0 == 1)
        #expect(throws: JobValidationError.self) { try job.validate() }
    }
}

/// `levee status --json` and `levee doctor --json` (schemas status-report and doctor-report): the
/// examples, reports Swift builds with every optional field, and reports read from a real cluster.
@Suite struct ReportSchemaTests {
    @Test func statusReportExample() throws {
        let report = try SchemaTests.roundTrip(StatusReport.self, "status-report.json", schema: "status-report")
        #expect(report.verdict == .attention && report.issues.map(\.kind) == ["dead_worker", "not_compacted"])
        #expect(report.deadWorkers.map(\.id) == ["w-3"] && report.deadWorkers.first?.takenOverBy == ["w-1"])
        #expect(report.lag.total == report.lag.partitions.map(\.lag).reduce(0, +))
        let results = try #require(report.topics.first { $0.name == "levee.results" })
        #expect(results.expectedCleanupPolicy == "compact" && results.cleanupPolicy == "delete")
        #expect(results.warnings.first?.contains("old jobs lose their terminal record") == true)
    }

    @Test func doctorReportExample() throws {
        let report = try SchemaTests.roundTrip(DoctorReport.self, "doctor-report.json", schema: "doctor-report")
        // ok and counts are what Levee itself derives from the checks.
        #expect(DoctorReport(checks: report.checks, at: report.at) == report)
        #expect(!report.ok && report.checks(.fail).map(\.name) == ["topic levee.results"])
        #expect(report.check("topic levee.results")?.fix?.contains("cleanup.policy=compact") == true)
    }

    /// A report with every optional field set, built the way `StatusReader` builds one.
    static func fullStatusReport() -> StatusReport {
        let now = Timestamp.now()
        let job = JobID.make()
        let jobs = TopicPartitionRef(topic: "levee.jobs", partition: 1)
        let dead = StatusReport.Worker(
            id: "w-9", host: "node-9", pid: 77, status: .dead, reportedState: .running, lastSeen: now.adding(milliseconds: -9000),
            lastSeenAgoMs: 9000, heartbeatIntervalMs: 2000, startedAt: now.adding(milliseconds: -600_000), engine: "synthetic",
            model: "synthetic", version: LeveeVersion.current, assigned: [jobs], currentJobs: [job],
            running: [RunningJobRef(jobID: job, attempt: 2, since: now.adding(milliseconds: -12_000))], jobTimeoutMs: 5000,
            jobsDone: 10, jobsFailed: 1, errors: 0, takenOverBy: ["w-1"])
        var report = StatusReport(
            at: now, verdict: .attention, summary: "", issues: [], group: "levee-workers",
            brokers: .init(bootstrap: "b:9092", reachable: true, error: nil, list: [.init(id: 1, host: "b", port: 9092)], answeredBy: 1),
            topics: [.init(name: "levee.results", purpose: "exactly one terminal record per job", exists: true, partitions: 4,
                           expectedPartitions: 4, leaderless: [2], cleanupPolicy: "delete", retentionMs: -1, expectedCleanupPolicy: "compact",
                           configError: nil, warnings: ["levee.results is not compacted (cleanup.policy=delete)"])],
            lag: .init(total: 3, partitions: [.init(topic: "levee.jobs", partition: 1, committed: 5, low: 0, high: 8, lag: 3)], error: nil),
            workers: [dead],
            oldestUnfinished: .init(jobID: job, key: job.description, topic: "levee.jobs", partition: 1, offset: 5, attempt: 2,
                                    submittedAt: now.adding(milliseconds: -20_000), ageMs: 20_000, notBefore: now, hasResult: false),
            stuck: [.init(jobID: job, worker: "w-9", host: "node-9", attempt: 2, stage: .inferenceStarted,
                          since: now.adding(milliseconds: -12_000), runningMs: 12_000, limitMs: 5000)])
        report.issues = StatusReader.issues(report)
        report.summary = StatusReader.summary(report)
        return report
    }

    @Test func statusReportSwiftBuildsIsValid() throws {
        let report = Self.fullStatusReport()
        #expect(Set(report.issues.map(\.kind)) == ["dead_worker", "not_compacted", "stuck_job", "no_live_worker"])
        let data = try LeveeJSON.encode(report)
        #expect(try LeveeJSON.decode(StatusReport.self, from: data) == report)
        let (status, output) = try SchemaTests.schemaCheck("status-report", [data])
        #expect(status == 0, "\(output)")
        // The schema is not a rubber stamp: a healthy verdict with issues, an unknown liveness,
        // and a missing field are rejected.
        var healthy = report
        healthy.verdict = .healthy
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var workers = try #require(object["workers"] as? [[String: Any]])
        workers[0]["status"] = "zombie"
        object["workers"] = workers
        var noLag = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        noLag["lag"] = nil
        for bad in [try LeveeJSON.encode(healthy), try JSONSerialization.data(withJSONObject: object),
                    try JSONSerialization.data(withJSONObject: noLag)] {
            #expect(try SchemaTests.schemaCheck("status-report", [bad]).0 == 1)
        }
    }

    @Test(.timeLimit(.minutes(2))) func statusReadFromAClusterIsValid() async throws {
        // Embedded cluster: a dead worker's heartbeat and a job nobody ran, so workers, lag and the
        // oldest unfinished job are all filled in from real records.
        let h = try PipelineHarness(partitions: 2)
        let now = Timestamp.now()
        try await StatusTests.plant(h, [StatusTests.beat("w-gone", at: now.adding(milliseconds: -60_000),
                                                         assigned: [TopicPartitionRef(topic: h.connection.layout.jobs, partition: 0)])])
        let client = try JobClient(connection: h.connection)
        _ = try await client.submit(h.chatJob("waiting"))
        try await client.close()
        let group = h.connection.layout.prefix + "workers"
        let report = await StatusReader.read(connection: h.connection, group: group, options: StatusTests.fast(group))
        #expect(report.workers.first?.status == .dead && report.oldestUnfinished != nil && report.lag.total == 1, "\(report.summary)")
        let (status, output) = try SchemaTests.schemaCheck("status-report", [try LeveeJSON.encode(report)])
        #expect(status == 0, "\(output)")

        // No broker: the unreachable report has the same shape.
        var options = StatusReader.Options()
        options.timeout = .seconds(2)
        let unreachable = await StatusReader.read(connection: KafkaConnection(bootstrapServers: "127.0.0.1:1"), options: options)
        #expect(unreachable.verdict == .unreachable && unreachable.issues.map(\.kind) == ["brokers_unreachable"])
        let (status2, output2) = try SchemaTests.schemaCheck("status-report", [try LeveeJSON.encode(unreachable)])
        #expect(status2 == 0, "\(output2)")
    }

    @Test(.timeLimit(.minutes(2))) func doctorReportsAreValid() async throws {
        // A real run on the embedded cluster (warns: one broker), one with the topics missing
        // (fails, each with its fix), and one with no broker at all.
        let h = try PipelineHarness(partitions: 2)
        let passing = await Doctor.run(DoctorTests.configuration(h.connection))
        let missing = await Doctor.run(DoctorTests.configuration(
            KafkaConnection(bootstrapServers: h.connection.bootstrapServers, layout: TopicLayout(prefix: DoctorTests.freshPrefix(), partitions: 2))))
        var brokerless = DoctorTests.configuration(KafkaConnection(bootstrapServers: "127.0.0.1:1"))
        brokerless.timeout = .seconds(2)
        let unreachable = await Doctor.run(brokerless)
        #expect(passing.ok && !missing.ok && !unreachable.ok)
        #expect(passing.checks.contains { $0.status == .warn } && missing.checks.contains { $0.status == .skip || $0.status == .fail })
        let documents = try [passing, missing, unreachable].map { try LeveeJSON.encode($0) }
        let (status, output) = try SchemaTests.schemaCheck("doctor-report", documents)
        #expect(status == 0, "\(output)")

        // ok must agree with the checks, and a failure must say how to fix it.
        var lying = missing
        lying.ok = true
        var unfixed = missing
        if let i = unfixed.checks.firstIndex(where: { $0.status == .fail }) { unfixed.checks[i].fix = nil }
        for bad in [lying, unfixed] {
            #expect(try SchemaTests.schemaCheck("doctor-report", [try LeveeJSON.encode(bad)]).0 == 1)
        }
    }
}
