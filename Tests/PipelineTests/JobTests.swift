import Foundation
import Testing
@testable import Pipeline

@Suite struct JobIDTests {
    @Test func uuidV7CarriesTheSubmitTime() throws {
        let t = try #require(Timestamp(rfc3339: "2026-11-22T04:20:56.123Z"))
        let id = JobID.make(at: t)
        #expect(id.version == 7)
        #expect(id.embeddedTime == t)
        #expect(JobID(string: id.description) == id)
        #expect(id.bytes[8] & 0xC0 == 0x80, "RFC 9562 variant")
        #expect(JobID.make(at: t) != id, "random bits differ")
        #expect(JobID.make(at: t.adding(milliseconds: 1)) > id, "ids sort by time")
    }

    @Test func idempotencyKeyIdsMatchPythonUUID5() {
        // python3 -c "import uuid; ns=uuid.uuid5(uuid.NAMESPACE_URL,'https://levee.dev/job-id'); print(uuid.uuid5(ns,'acme/order-42'))"
        #expect(JobID.idempotencyNamespace.description == "c5865448-8a7b-5750-ad5a-a958dd73537d")
        let id = JobID.derived(tenant: "acme", idempotencyKey: "order-42")
        #expect(id.description == "0023731b-b01f-5cd2-a3b4-5ae75c29899e")
        #expect(id.version == 5 && id.embeddedTime == nil)
        #expect(JobID.derived(tenant: "other", idempotencyKey: "order-42") != id)
    }

    @Test func sha1KnownAnswers() {
        func hex(_ s: String) -> String { SHA1.hash(Array(s.utf8)).map { String(format: "%02x", $0) }.joined() }
        #expect(hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex(String(repeating: "a", count: 1000)) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    @Test(arguments: ["", "not-a-uuid", "019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b0", "019ab0f2x7c41-7a3e-9b1d-2f6c8e4a1b07", "019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1bzz"])
    func malformedIDs(_ text: String) {
        #expect(JobID(string: text) == nil)
    }
}

@Suite struct TimestampTests {
    @Test func formatsAndParsesRFC3339() throws {
        let t = Timestamp(millisecondsSinceEpoch: 1_795_321_256_123)
        #expect(t.description == "2026-11-22T04:20:56.123Z")
        #expect(Timestamp(rfc3339: t.description) == t)
        #expect(Timestamp(rfc3339: "2026-11-22T06:20:56.123+02:00") == t)
        #expect(Timestamp(rfc3339: "2026-11-22T04:20:56.1234567Z") == t)
        #expect(Timestamp(rfc3339: "1970-01-01T00:00:00Z")?.millisecondsSinceEpoch == 0)
        #expect(Timestamp(rfc3339: "2000-02-29T12:00:00Z")?.description == "2000-02-29T12:00:00.000Z")
        #expect(Timestamp(millisecondsSinceEpoch: -1).description == "1969-12-31T23:59:59.999Z")
        for bad in ["", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T04:20:56", "2026-11-22T04:20:56.Z", "2026-11-22T04:20:56Zjunk"] {
            #expect(Timestamp(rfc3339: bad) == nil, "\(bad)")
        }
    }
}

@Suite struct TraceParentTests {
    @Test func parsesAndMakes() throws {
        let tp = try #require(TraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(tp.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(tp.child().traceID == tp.traceID && tp.child().parentID != tp.parentID)
        #expect(TraceParent(TraceParent.make().description) != nil)
        #expect(TraceParent("00-00000000000000000000000000000000-00f067aa0ba902b7-01") == nil)
        #expect(TraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == nil)
        #expect(TraceParent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == nil, "upper case is invalid in v00")
    }
}

@Suite struct JobValidationTests {
    static func job(_ change: (inout JobEnvelope) -> Void = { _ in }) -> JobEnvelope {
        var job = JobEnvelope(tenant: "acme", kind: .chat, model: "smollm2-135m-instruct",
                              input: JobInput(messages: [ChatTurn(role: "user", content: "hi")]))
        change(&job)
        return job
    }

    @Test func aGoodJobPasses() throws {
        try Self.job().validate()
        try Self.job { $0.kind = .textGenerate; $0.input = JobInput(prompt: "Once") }.validate()
    }

    /// Each bad job: the change that breaks it, and what the error must say.
    static func breakJob(_ expected: String, _ j: inout JobEnvelope) {
        switch expected {
        case "tenant is empty": j.tenant = ""
        case "unknown kind 'image'": j.kind = JobKind(rawValue: "image")
        case "input.messages is required for kind chat": j.input = JobInput(prompt: "x")
        case "input.prompt is required for kind text.generate": j.kind = .textGenerate
        case "params.max_tokens is 0": j.params.maxTokens = 0
        case "params.temperature is 3.0": j.params.temperature = 3
        case "params.top_p is 0.0": j.params.topP = 0
        case "params.stop contains an empty string": j.params.stop = [""]
        case "priority is 12": j.priority = 12
        case "role is 'robot'": j.input.messages = [ChatTurn(role: "robot", content: "x")]
        case "is not after submitted_at": j.deadline = j.submittedAt.adding(milliseconds: -1)
        default: Issue.record("no case for \(expected)")
        }
    }

    @Test(arguments: ["tenant is empty", "unknown kind 'image'", "input.messages is required for kind chat",
                      "input.prompt is required for kind text.generate", "params.max_tokens is 0",
                      "params.temperature is 3.0", "params.top_p is 0.0", "params.stop contains an empty string",
                      "priority is 12", "role is 'robot'", "is not after submitted_at"])
    func badJobsNameTheProblem(_ expected: String) {
        let error = #expect(throws: JobValidationError.self) { try Self.job { Self.breakJob(expected, &$0) }.validate() }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "no error") should mention \(expected)")
    }

    @Test func unknownModelOnlyWhenTheWorkerListsModels() throws {
        var limits = JobLimits()
        try Self.job { $0.model = "gpt-9" }.validate(limits: limits)
        limits.knownModels = ["smollm2-135m-instruct"]
        #expect(throws: JobValidationError.self) { try Self.job { $0.model = "gpt-9" }.validate(limits: limits) }
    }

    @Test func decodeRecordClassifiesPoison() throws {
        let limits = JobLimits()
        func poison(_ text: String) -> String? {
            if case .failure(let e) = JobEnvelope.decodeRecord(Data(text.utf8), limits: limits) {
                #expect(e.errorClass == .poisonInput && !e.retriable)
                return e.message
            }
            return nil
        }
        #expect(poison("{\"schema\": levee}")?.hasPrefix("invalid JSON") == true)
        #expect(poison("{\"schema\":\"levee.job/v1\"}")?.contains("is missing") == true)
        var job = Self.job()
        job.params.maxTokens = -1
        #expect(poison(String(decoding: try LeveeJSON.encode(job), as: UTF8.self))?.contains("max_tokens") == true)
        var small = JobLimits()
        small.maxRecordBytes = 10
        if case .failure(let e) = JobEnvelope.decodeRecord(try LeveeJSON.encode(Self.job()), limits: small) {
            #expect(e.message.contains("the limit is 10"))
        } else {
            Issue.record("an oversize record must be poison")
        }
        let good = try LeveeJSON.encode(Self.job())
        guard case .success = JobEnvelope.decodeRecord(good, limits: limits) else {
            Issue.record("a good record must decode"); return
        }
    }
}
