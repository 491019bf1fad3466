import Foundation
import Testing
@testable import Pipeline

/// The direct JSON writer must give exactly the bytes Foundation's `JSONEncoder` gives (with
/// Levee's options) for the same value: random values over every field, with the string and
/// number cases where encoders differ (escapes, control characters, non-ASCII, emoji, combining
/// marks, absent optionals, extreme integers, many doubles).
@Suite struct RecordJSONWriterTests {
    /// Deterministic, so a failure names a reproducible case (the seed is in the message).
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Pieces strings are built from: plain text, every escape JSON needs, characters Foundation
    /// might escape but does not (`/`, DEL, U+2028), multi-byte UTF-8, emoji (also ZWJ and flag
    /// sequences), combining marks, a BOM and a noncharacter.
    static let pieces: [String] = [
        "a", "Z", "hello world", "0", "9", "_", "-", ".", " ", "{", "}", "[", "]", ":", ",",
        "\"", "\\", "/", "\u{7F}", "\n", "\r", "\t", "\u{08}", "\u{0C}", "\u{00}", "\u{01}", "\u{0B}", "\u{1B}", "\u{1F}",
        "é", "e\u{301}", "ü", "ß", "日本語", "Ж", "\u{2028}", "\u{2029}", "\u{FEFF}", "\u{FFFF}", "\u{10FFFF}",
        "😀", "👩‍👩‍👧", "🇫🇷", "\u{1F3FD}", "</script>", "\\u0000", "null",
    ]

    static func string(_ g: inout SplitMix, maxPieces: Int = 12) -> String {
        let n = Int.random(in: 0...maxPieces, using: &g)
        var s = ""
        for _ in 0..<n { s += pieces.randomElement(using: &g)! }
        return s
    }

    static func maybe<T>(_ g: inout SplitMix, _ make: (inout SplitMix) -> T) -> T? {
        Bool.random(using: &g) ? make(&g) : nil
    }

    static func int(_ g: inout SplitMix) -> Int {
        switch Int.random(in: 0..<6, using: &g) {
        case 0: return Int.random(in: -10...10, using: &g)
        case 1: return [Int.min, Int.max, Int(Int32.min), Int(Int32.max), 0, -1].randomElement(using: &g)!
        default: return Int(truncatingIfNeeded: g.next()) >> Int.random(in: 0..<63, using: &g)
        }
    }

    static func int64(_ g: inout SplitMix) -> Int64 { Int64(int(&g)) }
    static func int32(_ g: inout SplitMix) -> Int32 { Int32(truncatingIfNeeded: int(&g)) }

    /// Doubles from every region of the format: random bit patterns, short decimals, integers
    /// around the point where Swift switches to exponent form, powers of ten, subnormals, ±0.
    static func double(_ g: inout SplitMix) -> Double {
        switch Int.random(in: 0..<9, using: &g) {
        case 0:
            var d: Double
            repeat { d = Double(bitPattern: g.next()) } while !d.isFinite
            return d
        case 1: return Double(Int.random(in: -100_000...100_000, using: &g)) / [1, 10, 100, 1000, 1e6].randomElement(using: &g)!
        case 2: return Double(Int64.random(in: -(1 << 60)...(1 << 60), using: &g))
        case 3:
            let base = [1e15, 1e16, 1e17, 9007199254740992.0, 1e21, 1e22, 1e-4, 1e-5, 1e-6, 1e-7].randomElement(using: &g)!
            return base + Double(Int.random(in: -3...3, using: &g)) * base.ulp
        case 4: return pow(10, Double(Int.random(in: -325...308, using: &g))) * (Bool.random(using: &g) ? 1 : -1)
        case 5: return Double(bitPattern: UInt64.random(in: 1...0x000F_FFFF_FFFF_FFFF, using: &g))  // subnormal
        case 6: return [0.0, -0.0, 1, -1, 0.1 + 0.2, 0.7, 0.95, 2, .ulpOfOne, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                        .leastNormalMagnitude, .leastNonzeroMagnitude].randomElement(using: &g)!
        case 7: return Double.random(in: 0...2, using: &g)
        default: return Double.random(in: -1e300...1e300, using: &g)
        }
    }

    static func timestamp(_ g: inout SplitMix) -> Timestamp {
        switch Int.random(in: 0..<4, using: &g) {
        case 0: return Timestamp(millisecondsSinceEpoch: Int64.random(in: -62_135_596_800_000...253_402_300_799_999, using: &g))
        case 1: return Timestamp(millisecondsSinceEpoch: Int64.random(in: -100...100, using: &g))
        default: return Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64.random(in: 0...200_000_000_000, using: &g))
        }
    }

    static func jobID(_ g: inout SplitMix) -> JobID {
        JobID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })!
    }

    static func metadata(_ g: inout SplitMix) -> [String: String] {
        var m: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...6, using: &g) { m[string(&g, maxPieces: 4)] = string(&g) }
        return m
    }

    static func jobError(_ g: inout SplitMix) -> JobError {
        JobError(ErrorClass.allCases.randomElement(using: &g)!, string(&g), retriable: Bool.random(using: &g))
    }

    static func worker(_ g: inout SplitMix) -> WorkerIdentity {
        WorkerIdentity(id: string(&g), host: string(&g), pid: int32(&g))
    }

    static func job(_ g: inout SplitMix) -> JobEnvelope {
        let messages = maybe(&g) { g in
            (0..<Int.random(in: 0...4, using: &g)).map { _ in ChatTurn(role: string(&g, maxPieces: 2), content: string(&g)) }
        }
        let params = JobParameters(
            maxTokens: int(&g), temperature: double(&g), topP: double(&g), topK: int(&g), repetitionPenalty: double(&g),
            seed: maybe(&g) { g in UInt64.random(in: [0...9, 0...UInt64.max].randomElement(using: &g)!, using: &g) },
            stop: (0..<Int.random(in: 0...3, using: &g)).map { _ in string(&g) })
        var job = JobEnvelope(
            jobID: jobID(&g), idempotencyKey: maybe(&g) { string(&$0) }, tenant: string(&g),
            kind: [JobKind.chat, .textGenerate, JobKind(rawValue: string(&g))].randomElement(using: &g)!,
            model: string(&g), input: JobInput(prompt: maybe(&g) { string(&$0) }, messages: messages), params: params,
            priority: int(&g), deadline: maybe(&g, timestamp), attempt: int(&g), submittedAt: timestamp(&g),
            traceparent: .make(), notBefore: maybe(&g, timestamp), lastError: maybe(&g, jobError), metadata: maybe(&g, metadata))
        job.callbackURL = maybe(&g) { string(&$0) }
        if Int.random(in: 0..<8, using: &g) == 0 { job.schema = string(&g) }
        return job
    }

    static func traceEvent(_ g: inout SplitMix) -> TraceEvent {
        var event = TraceEvent(
            jobID: jobID(&g), stage: TraceStage.allCases.filter { $0 != .unknown }.randomElement(using: &g)!, at: timestamp(&g),
            attempt: int(&g), traceparent: maybe(&g) { _ in TraceParent.make() }, worker: maybe(&g, worker),
            topic: maybe(&g) { string(&$0) }, partition: maybe(&g, int32), offset: maybe(&g, int64),
            generation: maybe(&g, int32), error: maybe(&g, jobError), model: maybe(&g) { string(&$0) },
            promptTokens: maybe(&g, int), completionTokens: maybe(&g, int), durationMs: maybe(&g, int64),
            notBefore: maybe(&g, timestamp), status: maybe(&g) { JobStatus.allCases.randomElement(using: &$0)! },
            detail: maybe(&g) { string(&$0) })
        if Int.random(in: 0..<8, using: &g) == 0 { event.schema = string(&g) }
        return event
    }

    static func result(_ g: inout SplitMix) -> ResultRecord {
        var record = ResultRecord(
            jobID: jobID(&g), status: JobStatus.allCases.randomElement(using: &g)!, attempt: int(&g),
            tenant: maybe(&g) { string(&$0) }, model: maybe(&g) { string(&$0) },
            output: maybe(&g) { g in ResultOutput(text: string(&g, maxPieces: 40), finishReason: string(&g), promptTokens: int(&g), completionTokens: int(&g)) },
            error: maybe(&g, jobError), worker: maybe(&g, worker), submittedAt: maybe(&g, timestamp), completedAt: timestamp(&g),
            timings: maybe(&g) { g in ResultTimings(queueMs: int64(&g), inferenceMs: int64(&g), totalMs: int64(&g)) },
            traceparent: maybe(&g) { _ in TraceParent.make() }, metadata: maybe(&g, metadata))
        if Int.random(in: 0..<8, using: &g) == 0 { record.schema = string(&g) }
        return record
    }

    /// Stored optional properties (by path) that were nil in every one of `values`: a field the
    /// generator never sets is a field whose encoding is never compared. Adding a field to a
    /// record without adding it here makes this fail.
    static func neverSet(_ values: [Any]) -> Set<String> {
        var seen: Set<String> = [], optionals: Set<String> = []
        func walk(_ value: Any, _ path: String) {
            for child in Mirror(reflecting: value).children {
                guard let label = child.label else { continue }
                let name = path + label
                let mirror = Mirror(reflecting: child.value)
                if mirror.displayStyle == .optional {
                    optionals.insert(name)
                    if let wrapped = mirror.children.first?.value {
                        seen.insert(name)
                        if Mirror(reflecting: wrapped).displayStyle == .struct { walk(wrapped, name + ".") }
                    }
                } else if mirror.displayStyle == .struct {
                    walk(child.value, name + ".")
                }
            }
        }
        for v in values { walk(v, "") }
        return optionals.subtracting(seen)
    }

    static func compare<T: Encodable>(_ values: [T], _ write: (T) throws -> [UInt8], seed: UInt64) throws {
        var mismatches = 0
        for (i, value) in values.enumerated() {
            let expected = Array(try LeveeJSON.foundationEncode(value))
            let actual = try write(value)
            if actual != expected {
                mismatches += 1
                if mismatches <= 3 {
                    Issue.record("seed \(seed) value \(i):\nfoundation \(String(decoding: expected, as: UTF8.self))\nwriter     \(String(decoding: actual, as: UTF8.self))")
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(values.count) \(T.self) values encoded differently (seed \(seed))")
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func jobEnvelopesAreByteIdentical(seed: UInt64) throws {
        var g = SplitMix(state: seed)
        let jobs = (0..<3000).map { _ in Self.job(&g) }.filter { $0.params.temperature.isFinite }
        #expect(Self.neverSet(jobs).isEmpty, "fields the generator never sets: \(Self.neverSet(jobs).sorted())")
        try Self.compare(jobs, { try $0.jsonBytes() }, seed: seed)
        try Self.compare(jobs, { try LeveeJSON.encodeBytes($0) }, seed: seed)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func traceEventsAreByteIdentical(seed: UInt64) throws {
        var g = SplitMix(state: seed)
        let events = (0..<3000).map { _ in Self.traceEvent(&g) }
        #expect(Self.neverSet(events).isEmpty, "fields the generator never sets: \(Self.neverSet(events).sorted())")
        try Self.compare(events, { $0.jsonBytes() }, seed: seed)
        try Self.compare(events, { try LeveeJSON.encodeBytes($0) }, seed: seed)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func resultRecordsAreByteIdentical(seed: UInt64) throws {
        var g = SplitMix(state: seed)
        let results = (0..<3000).map { _ in Self.result(&g) }
        #expect(Self.neverSet(results).isEmpty, "fields the generator never sets: \(Self.neverSet(results).sorted())")
        try Self.compare(results, { $0.jsonBytes() }, seed: seed)
        try Self.compare(results, { try LeveeJSON.encodeBytes($0) }, seed: seed)
    }

    /// Many doubles at once: Foundation encodes an array of them, the writer the same array.
    @Test func doublesAreWrittenAsFoundationWritesThem() throws {
        var g = SplitMix(state: 42)
        for _ in 0..<20 {
            let values = (0..<10_000).map { _ in Self.double(&g) }
            var w = RecordJSONWriter()
            w.bytes.append(UInt8(ascii: "["))
            for (i, d) in values.enumerated() {
                if i > 0 { w.bytes.append(UInt8(ascii: ",")) }
                try w.double(d)
            }
            w.bytes.append(UInt8(ascii: "]"))
            let expected = Array(try LeveeJSON.foundationEncode(values))
            if w.bytes != expected {
                // Find the first differing value for the message.
                for d in values {
                    var one = RecordJSONWriter()
                    try one.double(d)
                    let reference = Array(try LeveeJSON.foundationEncode([d]).dropFirst().dropLast())
                    #expect(one.bytes == reference, "\(d.bitPattern): writer \(String(decoding: one.bytes, as: UTF8.self)) foundation \(String(decoding: reference, as: UTF8.self))")
                    if one.bytes != reference { return }
                }
            }
            #expect(w.bytes == expected)
        }
    }

    /// Every single byte and a sample of scalars from each UTF-8 length, one string each.
    @Test func everyCharacterClassIsEscapedAsFoundationDoes() throws {
        var scalars = (0..<0x800).compactMap { Unicode.Scalar(UInt32($0)) }
        scalars += stride(from: 0x800, to: 0x10FFFF, by: 97).compactMap { Unicode.Scalar(UInt32($0)) }
        for scalar in scalars {
            let s = "x" + String(Character(scalar)) + "y"
            var w = RecordJSONWriter()
            w.string(s)
            let reference = Array(try LeveeJSON.foundationEncode([s]).dropFirst().dropLast())
            #expect(w.bytes == reference, "U+\(String(scalar.value, radix: 16))")
            if w.bytes != reference { return }
        }
    }

    @Test func nonFiniteDoublesThrowLikeJSONEncoder() throws {
        var job = JobClient.makeJob(tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"))
        for bad in [Double.nan, .infinity, -.infinity] {
            job.params.temperature = bad
            #expect(throws: EncodingError.self) { try LeveeJSON.foundationEncode(job) }
            #expect(throws: EncodingError.self) { try job.jsonBytes() }
        }
    }

    /// What the writer produces reads back as the same value, and (for values inside the
    /// schemas' ranges) is valid against schemas/ — checked with scripts/schema-check.
    @Test func writerOutputDecodesAndIsSchemaValid() throws {
        var g = SplitMix(state: 7)
        var jobs: [Data] = [], events: [Data] = [], results: [Data] = []
        for _ in 0..<300 {
            var job = Self.job(&g)
            job.schema = JobEnvelope.schemaID
            job.callbackURL = job.callbackURL.map { _ in "https://hooks.example.com/levee/\(Int.random(in: 0...9999, using: &g))" }
            job.tenant = "t" + String(String.UnicodeScalarView(job.tenant.unicodeScalars.prefix(100)))
            job.model = "m" + job.model
            job.kind = Bool.random(using: &g) ? .chat : .textGenerate
            if job.kind == .chat {
                job.input = JobInput(messages: [ChatTurn(role: ["system", "user", "assistant"].randomElement(using: &g)!, content: Self.string(&g))])
            } else {
                job.input = JobInput(prompt: "p" + Self.string(&g))
            }
            if let key = job.idempotencyKey { job.idempotencyKey = "k" + String(String.UnicodeScalarView(key.unicodeScalars.prefix(200))) }
            job.params = JobParameters(maxTokens: Int.random(in: 1...4096, using: &g), temperature: Double.random(in: 0...2, using: &g),
                                       topP: Double.random(in: 0.01...1, using: &g), topK: Int.random(in: 0...100, using: &g),
                                       repetitionPenalty: Double.random(in: 0.5...2, using: &g), seed: job.params.seed, stop: job.params.stop.map { "s" + $0 })
            job.priority = Int.random(in: 0...9, using: &g)
            job.attempt = Int.random(in: 1...5, using: &g)
            job.submittedAt = Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64.random(in: 0...1_000_000_000, using: &g))
            let submittedAt = job.submittedAt
            job.deadline = job.deadline.map { _ in submittedAt.adding(milliseconds: 1000) }
            job.notBefore = job.notBefore.map { _ in submittedAt }
            let bytes = Data(try job.jsonBytes())
            #expect(try LeveeJSON.decode(JobEnvelope.self, from: bytes) == job)
            jobs.append(bytes)

            var event = Self.traceEvent(&g)
            event.schema = TraceEvent.schemaID
            event.attempt = Int.random(in: 1...5, using: &g)
            event.at = job.submittedAt
            event.notBefore = event.notBefore.map { _ in job.submittedAt }
            event.partition = event.partition.map { abs($0 / 2) }
            event.offset = event.offset.map { abs($0 / 2) }
            event.promptTokens = event.promptTokens.map { abs($0 / 2) }
            event.completionTokens = event.completionTokens.map { abs($0 / 2) }
            event.durationMs = event.durationMs.map { abs($0 / 2) }
            if let w = event.worker { event.worker = WorkerIdentity(id: "w" + w.id, host: "h" + w.host, pid: abs(w.pid / 2)) }
            let eventBytes = Data(event.jsonBytes())
            #expect(try LeveeJSON.decode(TraceEvent.self, from: eventBytes) == event)
            events.append(eventBytes)

            var result = Self.result(&g)
            result.schema = ResultRecord.schemaID
            result.attempt = Int.random(in: 1...5, using: &g)
            result.completedAt = job.submittedAt
            result.submittedAt = result.submittedAt.map { _ in job.submittedAt }
            if result.status == .succeeded {
                result.output = ResultOutput(text: Self.string(&g), finishReason: "stop", promptTokens: 3, completionTokens: 4)
            } else {
                result.error = Self.jobError(&g)
                result.output = result.output.map { ResultOutput(text: $0.text, finishReason: $0.finishReason, promptTokens: 1, completionTokens: 2) }
            }
            result.timings = result.timings.map { _ in ResultTimings(queueMs: 1, inferenceMs: 2, totalMs: 3) }
            if let w = result.worker { result.worker = WorkerIdentity(id: "w" + w.id, host: "h" + w.host, pid: abs(w.pid / 2)) }
            let resultBytes = Data(result.jsonBytes())
            #expect(try LeveeJSON.decode(ResultRecord.self, from: resultBytes) == result)
            results.append(resultBytes)
        }
        for (schema, documents) in [("job", jobs), ("trace-event", events), ("result", results)] {
            let (status, output) = try SchemaTests.schemaCheck(schema, documents)
            #expect(status == 0, "\(schema): \(output.prefix(2000))")
        }
    }
}
