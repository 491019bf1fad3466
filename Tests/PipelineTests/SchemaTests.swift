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
