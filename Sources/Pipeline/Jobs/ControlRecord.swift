/// A control record in `levee.control` (compacted, keyed by job id; schema `levee.control/v1`).
/// Today the only action is `cancel`: a worker that holds the job stops it between tokens and
/// writes a `cancelled` result; a job not yet started is cancelled when it is received.
public struct ControlRecord: Codable, Sendable, Equatable {
    public static let schemaID = "levee.control/v1"

    public var schema: String
    public var jobID: JobID
    public var action: String
    public var reason: String?
    public var at: Timestamp

    public init(jobID: JobID, action: String = "cancel", reason: String? = nil, at: Timestamp = .now()) {
        self.schema = Self.schemaID
        self.jobID = jobID
        self.action = action
        self.reason = reason
        self.at = at
    }

    enum CodingKeys: String, CodingKey { case schema, jobID = "job_id", action, reason, at }
}
