import Foundation

/// A record in `levee.dlq` (schema `levee.dlq/v1`): the original bytes and why they could not be
/// run, so an operator can fix and replay them. Keyed by the job id when one could be read.
public struct DeadLetter: Codable, Sendable, Equatable {
    public static let schemaID = "levee.dlq/v1"

    public var schema: String
    /// Nil when the original record was too broken to carry a job id.
    public var jobID: JobID?
    public var reason: JobError
    /// The original record value, base64 on the wire.
    public var original: Data
    /// Where the original was read.
    public var source: TopicPartitionRef
    public var sourceOffset: Int64
    public var attempt: Int?
    public var worker: WorkerIdentity?
    public var at: Timestamp

    public init(jobID: JobID?, reason: JobError, original: Data, source: TopicPartitionRef, sourceOffset: Int64,
                attempt: Int? = nil, worker: WorkerIdentity? = nil, at: Timestamp = .now()) {
        self.schema = Self.schemaID
        self.jobID = jobID
        self.reason = reason
        self.original = original
        self.source = source
        self.sourceOffset = sourceOffset
        self.attempt = attempt
        self.worker = worker
        self.at = at
    }

    enum CodingKeys: String, CodingKey {
        case schema, jobID = "job_id", reason, original, source, sourceOffset = "source_offset", attempt, worker, at
    }
}
