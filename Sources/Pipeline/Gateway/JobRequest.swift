import Foundation

/// The body of `POST /v1/jobs` (schemas/job-request.schema.json): the parts of a job a caller
/// chooses. The gateway fills in the id (from the `Idempotency-Key` header or field, like
/// `levee submit --idempotency-key`), the submit time and the traceparent.
public struct JobRequest: Decodable, Sendable, Equatable {
    public var tenant: String?
    public var kind: JobKind?
    public var model: String?
    public var input: JobInput?
    /// Shorthand for `input.prompt`.
    public var prompt: String?
    /// Shorthand for `input.messages`.
    public var messages: [ChatTurn]?
    public var params: JobParameters?
    public var idempotencyKey: String?
    /// An absolute deadline, or `deadline_seconds` from now (not both).
    public var deadline: Timestamp?
    public var deadlineSeconds: Double?
    public var priority: Int?
    public var metadata: [String: String]?
    public var callbackURL: String?
    /// A W3C traceparent to continue the caller's trace (else one is made).
    public var traceparent: TraceParent?

    static let fields: Set<String> = ["tenant", "kind", "model", "input", "prompt", "messages", "params", "idempotency_key",
                                      "deadline", "deadline_seconds", "priority", "metadata", "callback_url", "traceparent"]

    enum CodingKeys: String, CodingKey {
        case tenant, kind, model, input, prompt, messages, params, idempotencyKey = "idempotency_key", deadline
        case deadlineSeconds = "deadline_seconds", priority, metadata, callbackURL = "callback_url", traceparent
    }

    /// Parses a body: invalid JSON, unknown fields and wrong types are reported as problems
    /// naming the field (unknown fields too, so a misspelt `max_token` is not silently ignored).
    public static func parse(_ body: [UInt8]) -> Result<JobRequest, JobValidationError> {
        let data = Data(body)
        if body.isEmpty { return .failure(JobValidationError(["the body is empty; send a JSON object (see schemas/openapi.yaml)"])) }
        guard let object = try? JSONSerialization.jsonObject(with: data) else {
            return .failure(JobValidationError(["the body is not valid JSON"]))
        }
        guard let fields = object as? [String: Any] else { return .failure(JobValidationError(["the body must be a JSON object"])) }
        let unknown = fields.keys.filter { !Self.fields.contains($0) }.sorted()
        if !unknown.isEmpty {
            return .failure(JobValidationError(unknown.map { "unknown field '\($0)'; known: " + Self.fields.sorted().joined(separator: ", ") }))
        }
        do {
            return .success(try LeveeJSON.decode(JobRequest.self, from: data))
        } catch {
            return .failure(JobValidationError([LeveeJSON.explain(error)]))
        }
    }

    /// The job this request asks for; throws every problem found (the job's own validation too).
    public func job(defaultTenant: String, defaultModel: String, headerIdempotencyKey: String?,
                    limits: JobLimits, now: Timestamp = .now()) throws(JobValidationError) -> JobEnvelope {
        var problems: [String] = []
        if let header = headerIdempotencyKey, let field = idempotencyKey, header != field {
            problems.append("the Idempotency-Key header and the idempotency_key field differ; give one")
        }
        var input = self.input ?? JobInput()
        if prompt != nil || messages != nil {
            if self.input != nil { problems.append("give input, or prompt/messages, not both") }
            input = JobInput(prompt: prompt, messages: messages)
        }
        if input.prompt == nil && input.messages == nil { problems.append("input.prompt (or prompt) or input.messages (or messages) is required") }
        if deadline != nil && deadlineSeconds != nil { problems.append("give deadline or deadline_seconds, not both") }
        if let s = deadlineSeconds, !(s > 0 && s <= 30 * 24 * 3600) { problems.append("deadline_seconds is \(s); use (0, 2592000]") }
        if !problems.isEmpty { throw JobValidationError(problems) }
        let kind = self.kind ?? (input.messages != nil ? .chat : .textGenerate)
        let key = headerIdempotencyKey ?? idempotencyKey
        var job = JobClient.makeJob(tenant: tenant ?? defaultTenant, kind: kind, model: model ?? defaultModel, input: input,
                                    params: params ?? JobParameters(), idempotencyKey: key, priority: priority ?? 5,
                                    deadline: deadline ?? deadlineSeconds.map { now.adding(milliseconds: Int64($0 * 1000)) },
                                    traceparent: traceparent, metadata: metadata)
        job.callbackURL = callbackURL
        try job.validate(limits: limits)
        return job
    }
}
