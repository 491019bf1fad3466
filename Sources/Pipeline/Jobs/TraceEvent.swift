/// The stages a job passes through; each writes one trace event.
public enum TraceStage: String, Codable, Sendable, CaseIterable {
    case submitted, accepted, received
    case inferenceStarted = "inference_started", inferenceFinished = "inference_finished"
    case retryScheduled = "retry_scheduled", deadLettered = "dead_lettered"
    case expired, cancelled
    case resultCommitted = "result_committed"
    case requeued
    case handedBack = "handed_back"
    /// Callback deliveries (written by the callback dispatcher, after the result).
    case callbackFailed = "callback_failed", callbackDelivered = "callback_delivered", callbackAbandoned = "callback_abandoned"
    /// A stage written by a newer Levee that this one does not know.
    case unknown

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = TraceStage(rawValue: raw) ?? .unknown
    }
}

/// One event on a job's path, in `levee.trace` keyed by job id (schema `levee.trace/v1`), so all
/// of a job's events land in one partition, in order. Workers log the same object as a JSON line.
public struct TraceEvent: Codable, Sendable, Equatable {
    public static let schemaID = "levee.trace/v1"

    public var schema: String
    public var jobID: JobID
    public var stage: TraceStage
    public var at: Timestamp
    public var attempt: Int
    public var traceparent: TraceParent?
    /// The process that wrote the event (absent for the submitting client when it has no id).
    public var worker: WorkerIdentity?
    /// Where the job record was read from or written to.
    public var topic: String?
    public var partition: Int32?
    public var offset: Int64?
    /// The consumer group generation the worker was in.
    public var generation: Int32?
    public var error: JobError?
    /// Stage-specific figures: model, tokens, durations, the retry time, the final status.
    public var model: String?
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var durationMs: Int64?
    public var notBefore: Timestamp?
    public var status: JobStatus?
    /// A short free-form note (e.g. "requeued after 120 s without a terminal record").
    public var detail: String?

    public init(jobID: JobID, stage: TraceStage, at: Timestamp = .now(), attempt: Int, traceparent: TraceParent? = nil,
                worker: WorkerIdentity? = nil, topic: String? = nil, partition: Int32? = nil, offset: Int64? = nil,
                generation: Int32? = nil, error: JobError? = nil, model: String? = nil, promptTokens: Int? = nil,
                completionTokens: Int? = nil, durationMs: Int64? = nil, notBefore: Timestamp? = nil,
                status: JobStatus? = nil, detail: String? = nil) {
        self.schema = Self.schemaID
        self.jobID = jobID
        self.stage = stage
        self.at = at
        self.attempt = attempt
        self.traceparent = traceparent
        self.worker = worker
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.generation = generation
        self.error = error
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.durationMs = durationMs
        self.notBefore = notBefore
        self.status = status
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey {
        case schema, jobID = "job_id", stage, at, attempt, traceparent, worker, topic, partition, offset
        case generation, error, model, promptTokens = "prompt_tokens", completionTokens = "completion_tokens"
        case durationMs = "duration_ms", notBefore = "not_before", status, detail
    }
}
