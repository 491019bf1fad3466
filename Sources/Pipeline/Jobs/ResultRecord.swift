/// The terminal state of a job.
public enum JobStatus: String, Codable, Sendable, CaseIterable {
    case succeeded, failed, expired, cancelled
}

/// What the model produced.
public struct ResultOutput: Codable, Sendable, Equatable {
    public var text: String
    /// `stop`, `length` or `cancelled`, as the engine reported.
    public var finishReason: String
    public var promptTokens: Int
    public var completionTokens: Int

    public init(text: String, finishReason: String, promptTokens: Int, completionTokens: Int) {
        self.text = text
        self.finishReason = finishReason
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    enum CodingKeys: String, CodingKey {
        case text, finishReason = "finish_reason", promptTokens = "prompt_tokens", completionTokens = "completion_tokens"
    }
}

/// Where the time went, in milliseconds.
public struct ResultTimings: Codable, Sendable, Equatable {
    /// From submit to the worker receiving the job.
    public var queueMs: Int64
    /// Time inside the engine.
    public var inferenceMs: Int64
    /// From submit to the result being produced.
    public var totalMs: Int64

    public init(queueMs: Int64, inferenceMs: Int64, totalMs: Int64) {
        self.queueMs = queueMs
        self.inferenceMs = inferenceMs
        self.totalMs = totalMs
    }

    enum CodingKeys: String, CodingKey { case queueMs = "queue_ms", inferenceMs = "inference_ms", totalMs = "total_ms" }
}

/// The one terminal record of a job in `levee.results` (schema `levee.result/v1`), keyed by job id.
/// Readers keep the first committed record per job id.
public struct ResultRecord: Codable, Sendable, Equatable {
    public static let schemaID = "levee.result/v1"

    public var schema: String
    public var jobID: JobID
    public var status: JobStatus
    public var attempt: Int
    public var tenant: String?
    public var model: String?
    /// Present when `status` is `succeeded`.
    public var output: ResultOutput?
    /// Present when `status` is `failed`, `expired` or `cancelled`.
    public var error: JobError?
    public var worker: WorkerIdentity?
    public var submittedAt: Timestamp?
    public var completedAt: Timestamp
    public var timings: ResultTimings?
    public var traceparent: TraceParent?
    public var metadata: [String: String]?

    public init(jobID: JobID, status: JobStatus, attempt: Int, tenant: String? = nil, model: String? = nil,
                output: ResultOutput? = nil, error: JobError? = nil, worker: WorkerIdentity? = nil,
                submittedAt: Timestamp? = nil, completedAt: Timestamp = .now(), timings: ResultTimings? = nil,
                traceparent: TraceParent? = nil, metadata: [String: String]? = nil) {
        self.schema = Self.schemaID
        self.jobID = jobID
        self.status = status
        self.attempt = attempt
        self.tenant = tenant
        self.model = model
        self.output = output
        self.error = error
        self.worker = worker
        self.submittedAt = submittedAt
        self.completedAt = completedAt
        self.timings = timings
        self.traceparent = traceparent
        self.metadata = metadata
    }

    enum CodingKeys: String, CodingKey {
        case schema, jobID = "job_id", status, attempt, tenant, model, output, error, worker
        case submittedAt = "submitted_at", completedAt = "completed_at", timings, traceparent, metadata
    }
}
