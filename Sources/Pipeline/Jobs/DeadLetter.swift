import Foundation
import Inference

/// A record in `levee.dlq` (schema `levee.dlq/v1`): the original bytes and why they could not be
/// run, so an operator can fix and replay them. Keyed by the job id when one could be read.
public struct DeadLetter: Codable, Sendable, Equatable {
    public static let schemaID = "levee.dlq/v1"

    public var schema: String
    /// Nil when the original record was too broken to carry a job id.
    public var jobID: JobID?
    public var reason: JobError
    /// The original record value, base64 on the wire; only its first bytes when
    /// `originalTruncated` (the whole would not fit the dead-letter topic's record size limit).
    public var original: Data
    /// Size in bytes of the whole original value.
    public var originalSize: Int?
    /// SHA-256 of the whole original value (hex), to check a replayed copy against.
    public var originalSHA256: String?
    /// True when `original` holds only a prefix; the whole record stays readable at `source` /
    /// `source_offset` until the source topic's retention removes it.
    public var originalTruncated: Bool?
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
        self.originalSize = original.count
        self.originalSHA256 = SHA256.hex(of: [UInt8](original))
        self.originalTruncated = false
        self.source = source
        self.sourceOffset = sourceOffset
        self.attempt = attempt
        self.worker = worker
        self.at = at
    }

    enum CodingKeys: String, CodingKey {
        case schema, jobID = "job_id", reason, original, originalSize = "original_size", originalSHA256 = "original_sha256"
        case originalTruncated = "original_truncated", source, sourceOffset = "source_offset", attempt, worker, at
    }

    /// Most bytes of a reason's message kept in a dead letter (messages may quote the input).
    static let maxReasonBytes = 4096

    /// The dead letter, with as much of the original as fits in `maxEncodedBytes` of encoded
    /// record (base64 makes the original a third larger): the whole original when it fits, else its
    /// first bytes with `original_truncated` set. Size and SHA-256 always describe the whole.
    public static func fitting(_ letter: DeadLetter, maxEncodedBytes: Int) -> DeadLetter {
        var letter = letter
        letter.reason.message = letter.reason.message.clipped(toBytes: maxReasonBytes)
        guard let whole = try? LeveeJSON.encode(letter), whole.count > maxEncodedBytes else { return letter }
        let original = letter.original
        letter.original = Data()
        letter.originalTruncated = true
        let frame = (try? LeveeJSON.encode(letter).count) ?? 1024
        // base64 writes 4 characters for each 3 bytes.
        var keep = max(0, (maxEncodedBytes - frame - 8) / 4 * 3)
        while true {
            letter.original = original.prefix(min(keep, original.count))
            if keep == 0 || ((try? LeveeJSON.encode(letter).count) ?? Int.max) <= maxEncodedBytes { return letter }
            keep /= 2
        }
    }
}
