import Foundation

/// A direct JSON writer for the records on the hot paths (`JobEnvelope`, `TraceEvent`,
/// `ResultRecord`), producing the same bytes as `LeveeJSON.foundationEncode` (Foundation's
/// `JSONEncoder` with `.sortedKeys` and `.withoutEscapingSlashes`) for the same value.
///
/// Why: in a profile of a submit burst, `JSONEncoder` took ~40 % of all CPU samples (it builds a
/// tree of boxed values, then sorts every object's keys). These records have fixed keys, so the
/// writer emits them in sorted order directly into one byte buffer.
///
/// Byte identity is a tested property (`RecordJSONWriterTests`), not an assumption: the rules
/// copied from Foundation are, for strings, `"` `\` and U+0000–U+001F escaped (`\b \t \n \f \r`
/// short, the others `\u00xx` in lower-case hex), everything else (including `/`, DEL and any
/// non-ASCII) written as UTF-8; for doubles, Swift's shortest round-trip `description` without a
/// trailing `.0`; non-finite doubles throw; absent optionals are left out; dictionary keys sort
/// by their UTF-8 bytes.
///
/// To add a field to one of these records: add it to the type's `write(to:)` below **at its
/// place in the sorted key order** (the keys' byte order), and to the random-value generator in
/// the tests (which fails when a stored property is never set).
public struct RecordJSONWriter: Sendable {
    public internal(set) var bytes: [UInt8]

    public init(capacity: Int = 512) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    // MARK: objects

    /// Writes `"key":`, preceded by a comma unless this is the object's first field (the last
    /// byte written is then its `{`: no value ends with `{`). Keys are plain ASCII literals.
    @inline(__always) mutating func key(_ key: StaticString) {
        if bytes.last != UInt8(ascii: "{") { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func field(_ key: StaticString, _ value: String) { self.key(key); string(value) }
    mutating func field(_ key: StaticString, _ value: String?) { if let value { field(key, value) } }
    mutating func field<I: FixedWidthInteger>(_ key: StaticString, _ value: I) { self.key(key); integer(value) }
    mutating func field<I: FixedWidthInteger>(_ key: StaticString, _ value: I?) { if let value { field(key, value) } }
    mutating func field(_ key: StaticString, _ value: Double) throws { self.key(key); try double(value) }
    mutating func field(_ key: StaticString, _ value: Bool) {
        self.key(key)
        bytes.append(contentsOf: value ? [116, 114, 117, 101] : [102, 97, 108, 115, 101])  // true / false
    }
    mutating func field(_ key: StaticString, _ value: Timestamp?) { if let value { field(key, value.description) } }
    mutating func field(_ key: StaticString, _ value: JobID) { self.key(key); jobID(value) }
    mutating func field(_ key: StaticString, _ value: TraceParent?) { if let value { field(key, value.description) } }
    mutating func field(_ key: StaticString, _ value: [String]) {
        self.key(key)
        bytes.append(UInt8(ascii: "["))
        for (i, s) in value.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(s)
        }
        bytes.append(UInt8(ascii: "]"))
    }
    mutating func field(_ key: StaticString, _ value: [String: String]?) {
        guard let value else { return }
        self.key(key)
        stringMap(value)
    }

    // MARK: values

    /// A JSON string with Foundation's escaping (see the type's comment).
    mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var runStart = 0
            var i = 0
            let n = utf8.count
            while i < n {
                let c = utf8[i]
                if c >= 0x20 && c != 0x22 && c != 0x5C { i += 1; continue }
                if runStart < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                switch c {
                case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
                case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                default:
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, Self.hex[Int(c >> 4)], Self.hex[Int(c & 0x0F)]])
                }
                i += 1
                runStart = i
            }
            if runStart < n { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<n])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Decimal digits of any fixed-width integer, without going through `String`.
    mutating func integer<I: FixedWidthInteger>(_ value: I) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            // Magnitude as UInt64 handles Int64.min.
            digits(UInt64(value.magnitude))
        } else {
            digits(UInt64(value))
        }
    }

    private mutating func digits(_ value: UInt64) {
        if value < 10 { bytes.append(UInt8(truncatingIfNeeded: 48 + value)); return }
        var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes hold UInt64.max's 20 digits
        var v = value
        withUnsafeMutableBytes(of: &buffer) { raw in
            var i = 24
            while v > 0 {
                i -= 1
                raw[i] = UInt8(truncatingIfNeeded: 48 + v % 10)
                v /= 10
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[i..<24]))
        }
    }

    /// Foundation's double form: the shortest round-trip text, without a trailing ".0".
    mutating func double(_ value: Double) throws {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, .init(codingPath: [],
                debugDescription: "Unable to encode Double.\(value) directly in JSON."))
        }
        if value == value.rounded(.towardZero), abs(value) < 1e15 {
            // Integral and below the exponent form: Foundation writes the integer digits.
            if value == 0 && value.sign == .minus { bytes.append(contentsOf: [UInt8(ascii: "-"), 0x30]); return }
            integer(Int64(value))
            return
        }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        bytes.append(contentsOf: text.utf8)
    }

    mutating func jobID(_ id: JobID) {
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: id.description.utf8)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func stringMap(_ map: [String: String]) {
        bytes.append(UInt8(ascii: "{"))
        // Foundation sorts keys by their UTF-8 bytes (not by String's canonical ordering, which
        // differs for decomposed characters: "e\u{301}x" comes before "éa" here).
        for (i, key) in map.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(key)
            bytes.append(UInt8(ascii: ":"))
            string(map[key]!)
        }
        bytes.append(UInt8(ascii: "}"))
    }
}

// MARK: the records (keys in sorted order: that order is part of the format)

extension JobError {
    func write(to w: inout RecordJSONWriter) {
        w.bytes.append(UInt8(ascii: "{"))
        w.field("class", errorClass.rawValue)
        w.field("message", message)
        w.field("retriable", retriable)
        w.bytes.append(UInt8(ascii: "}"))
    }
}

extension WorkerIdentity {
    func write(to w: inout RecordJSONWriter) {
        w.bytes.append(UInt8(ascii: "{"))
        w.field("host", host)
        w.field("id", id)
        w.field("pid", pid)
        w.bytes.append(UInt8(ascii: "}"))
    }
}

extension JobEnvelope {
    /// The record's JSON, byte for byte what `LeveeJSON.foundationEncode(self)` gives.
    /// Throws only for a non-finite double in `params` (JSON has no NaN), as `JSONEncoder` does.
    public func jsonBytes() throws -> [UInt8] {
        var w = RecordJSONWriter(capacity: 512)
        try write(to: &w)
        return w.bytes
    }

    func write(to w: inout RecordJSONWriter) throws {
        w.bytes.append(UInt8(ascii: "{"))
        w.field("attempt", attempt)
        w.field("callback_url", callbackURL)
        w.field("deadline", deadline)
        w.field("idempotency_key", idempotencyKey)
        w.key("input")
        w.bytes.append(UInt8(ascii: "{"))
        if let messages = input.messages {
            w.key("messages")
            w.bytes.append(UInt8(ascii: "["))
            for (i, turn) in messages.enumerated() {
                if i > 0 { w.bytes.append(UInt8(ascii: ",")) }
                w.bytes.append(UInt8(ascii: "{"))
                w.field("content", turn.content)
                w.field("role", turn.role)
                w.bytes.append(UInt8(ascii: "}"))
            }
            w.bytes.append(UInt8(ascii: "]"))
        }
        w.field("prompt", input.prompt)
        w.bytes.append(UInt8(ascii: "}"))
        w.field("job_id", jobID)
        w.field("kind", kind.rawValue)
        if let lastError { w.key("last_error"); lastError.write(to: &w) }
        w.field("metadata", metadata)
        w.field("model", model)
        w.field("not_before", notBefore)
        w.key("params")
        w.bytes.append(UInt8(ascii: "{"))
        w.field("max_tokens", params.maxTokens)
        try w.field("repetition_penalty", params.repetitionPenalty)
        w.field("seed", params.seed)
        w.field("stop", params.stop)
        try w.field("temperature", params.temperature)
        w.field("top_k", params.topK)
        try w.field("top_p", params.topP)
        w.bytes.append(UInt8(ascii: "}"))
        w.field("priority", priority)
        w.field("schema", schema)
        w.field("submitted_at", submittedAt)
        w.field("tenant", tenant)
        w.field("traceparent", traceparent)
        w.bytes.append(UInt8(ascii: "}"))
    }
}

extension TraceEvent {
    /// The record's JSON, byte for byte what `LeveeJSON.foundationEncode(self)` gives.
    public func jsonBytes() -> [UInt8] {
        var w = RecordJSONWriter(capacity: 384)
        write(to: &w)
        return w.bytes
    }

    func write(to w: inout RecordJSONWriter) {
        w.bytes.append(UInt8(ascii: "{"))
        w.field("at", at)
        w.field("attempt", attempt)
        w.field("completion_tokens", completionTokens)
        w.field("detail", detail)
        w.field("duration_ms", durationMs)
        if let error { w.key("error"); error.write(to: &w) }
        w.field("generation", generation)
        w.field("job_id", jobID)
        w.field("model", model)
        w.field("not_before", notBefore)
        w.field("offset", offset)
        w.field("partition", partition)
        w.field("prompt_tokens", promptTokens)
        w.field("schema", schema)
        w.field("stage", stage.rawValue)
        w.field("status", status?.rawValue)
        w.field("topic", topic)
        w.field("traceparent", traceparent)
        if let worker { w.key("worker"); worker.write(to: &w) }
        w.bytes.append(UInt8(ascii: "}"))
    }
}

extension ResultRecord {
    /// The record's JSON, byte for byte what `LeveeJSON.foundationEncode(self)` gives.
    public func jsonBytes() -> [UInt8] {
        var w = RecordJSONWriter(capacity: 512 + (output?.text.utf8.count ?? 0))
        write(to: &w)
        return w.bytes
    }

    func write(to w: inout RecordJSONWriter) {
        w.bytes.append(UInt8(ascii: "{"))
        w.field("attempt", attempt)
        w.field("completed_at", completedAt)
        if let error { w.key("error"); error.write(to: &w) }
        w.field("job_id", jobID)
        w.field("metadata", metadata)
        w.field("model", model)
        if let output {
            w.key("output")
            w.bytes.append(UInt8(ascii: "{"))
            w.field("completion_tokens", output.completionTokens)
            w.field("finish_reason", output.finishReason)
            w.field("prompt_tokens", output.promptTokens)
            w.field("text", output.text)
            w.bytes.append(UInt8(ascii: "}"))
        }
        w.field("schema", schema)
        w.field("status", status.rawValue)
        w.field("submitted_at", submittedAt)
        w.field("tenant", tenant)
        if let timings {
            w.key("timings")
            w.bytes.append(UInt8(ascii: "{"))
            w.field("inference_ms", timings.inferenceMs)
            w.field("queue_ms", timings.queueMs)
            w.field("total_ms", timings.totalMs)
            w.bytes.append(UInt8(ascii: "}"))
        }
        w.field("traceparent", traceparent)
        if let worker { w.key("worker"); worker.write(to: &w) }
        w.bytes.append(UInt8(ascii: "}"))
    }
}
