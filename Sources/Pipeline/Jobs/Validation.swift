import Foundation

/// Limits a job must respect. The client checks them before publishing; the worker checks them
/// again (other producers may not), and a job that breaks them is poison: failed + dead-lettered.
public struct JobLimits: Sendable, Equatable {
    /// The encoded job record, in bytes (Kafka's default message.max.bytes is about 1 MB).
    public var maxRecordBytes: Int = 256 * 1024
    public var maxTokens: Int = 4096
    public var maxStopSequences: Int = 8
    public var maxMessages: Int = 64
    public var maxTenantLength: Int = 128
    public var maxIdempotencyKeyLength: Int = 256
    /// The models a worker serves; empty means "do not check" (the submitting side's default).
    public var knownModels: Set<String> = []

    public init() {}
}

/// Everything wrong with a job, each problem naming its field.
public struct JobValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [String]
    public init(_ problems: [String]) { self.problems = problems }
    public var description: String {
        problems.count == 1 ? "invalid job: \(problems[0])" : "invalid job:\n  - " + problems.joined(separator: "\n  - ")
    }
}

extension JobEnvelope {
    /// Checks the job against `limits`; throws every problem found at once.
    public func validate(limits: JobLimits = JobLimits()) throws(JobValidationError) {
        var problems: [String] = []
        if schema != Self.schemaID { problems.append("schema is '\(schema)'; this Levee reads '\(Self.schemaID)'") }
        if tenant.isEmpty { problems.append("tenant is empty") }
        if tenant.count > limits.maxTenantLength { problems.append("tenant is longer than \(limits.maxTenantLength) characters") }
        if let key = idempotencyKey {
            if key.isEmpty { problems.append("idempotency_key is empty (omit it instead)") }
            if key.count > limits.maxIdempotencyKeyLength { problems.append("idempotency_key is longer than \(limits.maxIdempotencyKeyLength) characters") }
        }
        if model.isEmpty { problems.append("model is empty") }
        if !limits.knownModels.isEmpty, !limits.knownModels.contains(model) {
            problems.append("unknown model '\(model)'; this worker serves: \(limits.knownModels.sorted().joined(separator: ", "))")
        }
        switch kind {
        case .textGenerate:
            if input.prompt == nil { problems.append("input.prompt is required for kind text.generate") }
            if input.messages != nil { problems.append("input.messages is for kind chat; text.generate takes input.prompt") }
            if input.prompt?.isEmpty == true { problems.append("input.prompt is empty") }
        case .chat:
            if input.prompt != nil { problems.append("input.prompt is for kind text.generate; chat takes input.messages") }
            if let messages = input.messages {
                if messages.isEmpty { problems.append("input.messages is empty") }
                if messages.count > limits.maxMessages { problems.append("input.messages has \(messages.count) messages; at most \(limits.maxMessages)") }
                for (i, m) in messages.enumerated() where !["system", "user", "assistant"].contains(m.role) {
                    problems.append("input.messages[\(i)].role is '\(m.role)'; use system, user or assistant")
                }
            } else {
                problems.append("input.messages is required for kind chat")
            }
        default:
            problems.append("unknown kind '\(kind.rawValue)'; known: " + JobKind.known.map(\.rawValue).joined(separator: ", "))
        }
        let p = params
        if !(1...limits.maxTokens).contains(p.maxTokens) { problems.append("params.max_tokens is \(p.maxTokens); use 1...\(limits.maxTokens)") }
        if !(p.temperature >= 0 && p.temperature <= 2) { problems.append("params.temperature is \(p.temperature); use 0...2 (0 is greedy)") }
        if !(p.topP > 0 && p.topP <= 1) { problems.append("params.top_p is \(p.topP); use a value in (0, 1]") }
        if p.topK < 0 { problems.append("params.top_k is \(p.topK); use 0 (off) or more") }
        if !(p.repetitionPenalty >= 0.5 && p.repetitionPenalty <= 2) { problems.append("params.repetition_penalty is \(p.repetitionPenalty); use 0.5...2") }
        if p.stop.count > limits.maxStopSequences { problems.append("params.stop has \(p.stop.count) sequences; at most \(limits.maxStopSequences)") }
        if p.stop.contains("") { problems.append("params.stop contains an empty string") }
        if !(0...9).contains(priority) { problems.append("priority is \(priority); use 0...9") }
        if attempt < 1 { problems.append("attempt is \(attempt); attempts count from 1") }
        if let url = callbackURL {
            let parsed = URLComponents(string: url)
            if url.count > 2048 { problems.append("callback_url is longer than 2048 characters") }
            if parsed == nil || !["http", "https"].contains(parsed?.scheme?.lowercased() ?? "") || (parsed?.host ?? "").isEmpty {
                problems.append("callback_url '\(url.prefix(100))' is not an http or https URL with a host")
            }
        }
        if let deadline, deadline <= submittedAt { problems.append("deadline \(deadline) is not after submitted_at \(submittedAt)") }
        if !problems.isEmpty { throw JobValidationError(problems) }
    }
}

/// The JSON encoding every Levee record uses: compact, keys sorted, slashes unescaped.
public enum LeveeJSON {
    /// The record's JSON. The hot records (jobs, trace events, results) go through
    /// `RecordJSONWriter`, which gives the same bytes as `foundationEncode` several times faster.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        Data(try encodeBytes(value))
    }

    /// `encode` as bytes, for producers (no `Data` copy).
    public static func encodeBytes<T: Encodable>(_ value: T) throws -> [UInt8] {
        if let job = value as? JobEnvelope { return try job.jsonBytes() }
        if let event = value as? TraceEvent { return event.jsonBytes() }
        if let result = value as? ResultRecord { return result.jsonBytes() }
        return Array(try foundationEncode(value))
    }

    /// Foundation's `JSONEncoder`: the reference the direct writer is tested against, and the
    /// encoder of every other record.
    public static func foundationEncode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        try JSONDecoder().decode(type, from: data)
    }

    /// A decoding error in one line a person can act on: what is wrong and where.
    public static func explain(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.isEmpty ? "the record" : codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
                .joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                return "invalid JSON: " + (underlying ?? context.debugDescription)
            }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])) is missing"
        case .typeMismatch(let type, let context):
            return "\(path(context.codingPath)) has the wrong type (expected \(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)) is null (expected \(type))"
        @unknown default:
            return "\(error)"
        }
    }
}

extension JobEnvelope {
    /// Reads a job record as a worker does: any failure is a poison-input `JobError` saying what
    /// is wrong (invalid JSON, wrong schema, oversize, invalid field), never a thrown decoder error.
    public static func decodeRecord(_ bytes: Data, limits: JobLimits) -> Result<JobEnvelope, JobError> {
        if bytes.count > limits.maxRecordBytes {
            return .failure(JobError(.poisonInput, "record is \(bytes.count) bytes; the limit is \(limits.maxRecordBytes)"))
        }
        let job: JobEnvelope
        do {
            job = try LeveeJSON.decode(JobEnvelope.self, from: bytes)
        } catch {
            return .failure(JobError(.poisonInput, LeveeJSON.explain(error)))
        }
        // JSON leaves duplicate names undefined and decoders differ (first or last wins): such a
        // job means different things to different readers, so it is refused like any bad record.
        if let name = JSONNames.firstDuplicate(in: bytes) {
            return .failure(JobError(.poisonInput, "duplicate key \"\(name.clipped(toBytes: 200))\" in one object: the job is ambiguous"))
        }
        do {
            try job.validate(limits: limits)
        } catch {
            return .failure(JobError(.poisonInput, error.problems.joined(separator: "; ")))
        }
        return .success(job)
    }
}

/// A scan of JSON text for object member names that appear twice in one object.
enum JSONNames {
    /// The first member name repeated within one object, or nil. Expects text a JSON decoder has
    /// already accepted (so it need not check syntax); names compare as written, escapes and all.
    static func firstDuplicate(in data: Data) -> String? {
        data.withUnsafeBytes { raw -> String? in
            let bytes = raw.bindMemory(to: UInt8.self)
            // One entry per open container: the names seen so far for an object, nil for an array.
            var open: [Set<[UInt8]>?] = []
            var expectName = false
            var i = 0
            while i < bytes.count {
                switch bytes[i] {
                case UInt8(ascii: "{"):
                    open.append([])
                    expectName = true
                case UInt8(ascii: "["):
                    open.append(nil)
                    expectName = false
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if !open.isEmpty { open.removeLast() }
                    expectName = false
                case UInt8(ascii: ","):
                    expectName = open.last.map { $0 != nil } ?? false
                case UInt8(ascii: "\""):
                    var end = i + 1
                    while end < bytes.count && bytes[end] != UInt8(ascii: "\"") {
                        end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1
                    }
                    if expectName, !open.isEmpty, open[open.count - 1] != nil {
                        let name = Array(bytes[(i + 1)..<min(end, bytes.count)])
                        if open[open.count - 1]!.insert(name).inserted == false { return String(decoding: name, as: UTF8.self) }
                        expectName = false
                    }
                    i = end
                default:
                    break
                }
                i += 1
            }
            return nil
        }
    }
}
