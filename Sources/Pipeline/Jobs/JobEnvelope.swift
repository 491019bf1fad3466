import Foundation

/// What a job asks for: `text.generate` (a plain prompt) or `chat` (a list of messages).
/// Kept as an open string on the wire so an unknown kind decodes and is reported by validation
/// ("unknown kind 'x'; known: …") rather than failing with a decoder message.
public struct JobKind: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    public static let textGenerate = JobKind(rawValue: "text.generate")
    public static let chat = JobKind(rawValue: "chat")
    public static let known: [JobKind] = [.textGenerate, .chat]
    public var description: String { rawValue }
}

/// One chat turn, as in the OpenAI chat format.
public struct ChatTurn: Codable, Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// The model input: `prompt` for `text.generate`, `messages` for `chat`.
public struct JobInput: Codable, Sendable, Equatable {
    public var prompt: String?
    public var messages: [ChatTurn]?
    public init(prompt: String? = nil, messages: [ChatTurn]? = nil) { self.prompt = prompt; self.messages = messages }
}

/// Generation parameters. Every field is optional on the wire; absent fields take the defaults.
public struct JobParameters: Codable, Sendable, Equatable {
    public var maxTokens: Int
    /// 0 means greedy decoding.
    public var temperature: Double
    public var topP: Double
    /// 0 means off.
    public var topK: Int
    public var repetitionPenalty: Double
    /// Same seed, same model, same input → same text.
    public var seed: UInt64?
    public var stop: [String]

    public init(maxTokens: Int = 256, temperature: Double = 0.7, topP: Double = 0.95, topK: Int = 0,
                repetitionPenalty: Double = 1.0, seed: UInt64? = nil, stop: [String] = []) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
        self.stop = stop
    }

    enum CodingKeys: String, CodingKey {
        case maxTokens = "max_tokens", temperature, topP = "top_p", topK = "top_k"
        case repetitionPenalty = "repetition_penalty", seed, stop
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = JobParameters()
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens) ?? d.maxTokens
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? d.temperature
        topP = try c.decodeIfPresent(Double.self, forKey: .topP) ?? d.topP
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? d.topK
        repetitionPenalty = try c.decodeIfPresent(Double.self, forKey: .repetitionPenalty) ?? d.repetitionPenalty
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        stop = try c.decodeIfPresent([String].self, forKey: .stop) ?? d.stop
    }
}

/// A job as published to `levee.jobs` (schema `levee.job/v1`, see schemas/job.schema.json).
/// The Kafka key is the job id; the `traceparent` is also sent as a Kafka header.
public struct JobEnvelope: Codable, Sendable, Equatable {
    public static let schemaID = "levee.job/v1"

    public var schema: String
    public var jobID: JobID
    /// The caller's idempotency key, when the id was derived from it.
    public var idempotencyKey: String?
    public var tenant: String
    public var kind: JobKind
    public var model: String
    public var input: JobInput
    public var params: JobParameters
    /// 0 (lowest) to 9 (highest); carried for schedulers, default 5.
    public var priority: Int
    /// After this time the job is not run; it ends `expired`.
    public var deadline: Timestamp?
    /// 1 for the first try; retries and reconciler re-enqueues increase it.
    public var attempt: Int
    public var submittedAt: Timestamp
    public var traceparent: TraceParent
    /// On the retry topic: do not run before this time.
    public var notBefore: Timestamp?
    /// On a retry: why the previous attempt failed.
    public var lastError: JobError?
    /// Free-form caller metadata, returned untouched in the result.
    public var metadata: [String: String]?
    /// Where a callback dispatcher POSTs the terminal result (optional; see `levee callbacks`).
    public var callbackURL: String?

    public init(jobID: JobID = .make(), idempotencyKey: String? = nil, tenant: String, kind: JobKind, model: String,
                input: JobInput, params: JobParameters = JobParameters(), priority: Int = 5, deadline: Timestamp? = nil,
                attempt: Int = 1, submittedAt: Timestamp = .now(), traceparent: TraceParent = .make(),
                notBefore: Timestamp? = nil, lastError: JobError? = nil, metadata: [String: String]? = nil,
                callbackURL: String? = nil) {
        self.schema = Self.schemaID
        self.jobID = jobID
        self.idempotencyKey = idempotencyKey
        self.tenant = tenant
        self.kind = kind
        self.model = model
        self.input = input
        self.params = params
        self.priority = priority
        self.deadline = deadline
        self.attempt = attempt
        self.submittedAt = submittedAt
        self.traceparent = traceparent
        self.notBefore = notBefore
        self.lastError = lastError
        self.metadata = metadata
        self.callbackURL = callbackURL
    }

    enum CodingKeys: String, CodingKey {
        case schema, jobID = "job_id", idempotencyKey = "idempotency_key", tenant, kind, model, input, params
        case priority, deadline, attempt, submittedAt = "submitted_at", traceparent, notBefore = "not_before"
        case lastError = "last_error", metadata, callbackURL = "callback_url"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        jobID = try c.decode(JobID.self, forKey: .jobID)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        tenant = try c.decode(String.self, forKey: .tenant)
        kind = try c.decode(JobKind.self, forKey: .kind)
        model = try c.decode(String.self, forKey: .model)
        input = try c.decode(JobInput.self, forKey: .input)
        params = try c.decodeIfPresent(JobParameters.self, forKey: .params) ?? JobParameters()
        priority = try c.decodeIfPresent(Int.self, forKey: .priority) ?? 5
        deadline = try c.decodeIfPresent(Timestamp.self, forKey: .deadline)
        attempt = try c.decodeIfPresent(Int.self, forKey: .attempt) ?? 1
        submittedAt = try c.decode(Timestamp.self, forKey: .submittedAt)
        traceparent = try c.decode(TraceParent.self, forKey: .traceparent)
        notBefore = try c.decodeIfPresent(Timestamp.self, forKey: .notBefore)
        lastError = try c.decodeIfPresent(JobError.self, forKey: .lastError)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata)
        callbackURL = try c.decodeIfPresent(String.self, forKey: .callbackURL)
    }
}
