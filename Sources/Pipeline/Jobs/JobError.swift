/// Why a job (or one attempt of it) failed, classed so `levee trace` and metrics can group it.
public enum ErrorClass: String, Sendable, Codable, CaseIterable {
    /// The attempt ran longer than the per-job timeout.
    case timeout
    /// The engine failed while running the job.
    case engineError = "engine_error"
    /// The remote inference backend could not be reached.
    case backendUnreachable = "backend_unreachable"
    /// The job record itself is unusable: invalid JSON, wrong schema, oversize, unknown kind/model.
    case poisonInput = "poison_input"
    /// The worker's transactional producer was fenced by a newer instance.
    case fenced
    /// The worker lost the partition in a rebalance before the result was committed.
    case rebalanced
    /// The job's deadline passed before it could run.
    case deadline
    /// The job was cancelled through the control topic.
    case cancelled
    /// The engine ran out of memory.
    case outOfMemory = "out_of_memory"
    /// The broker refused a record the worker wrote for the job (too large for the topic, invalid,
    /// not authorized), so its normal outcome could not be committed: the job fails instead.
    case recordRejected = "record_rejected"
    /// Anything not classed above (also what an unknown class from a newer writer decodes to).
    case other

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = ErrorClass(rawValue: raw) ?? .other
    }
}

/// An error with its class, a message, and whether another attempt may succeed.
public struct JobError: Codable, Sendable, Equatable, Error, CustomStringConvertible {
    public var errorClass: ErrorClass
    public var message: String
    public var retriable: Bool

    public init(_ errorClass: ErrorClass, _ message: String, retriable: Bool = false) {
        self.errorClass = errorClass
        self.message = message
        self.retriable = retriable
    }

    enum CodingKeys: String, CodingKey { case errorClass = "class", message, retriable }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        errorClass = try c.decode(ErrorClass.self, forKey: .errorClass)
        message = try c.decode(String.self, forKey: .message)
        retriable = try c.decodeIfPresent(Bool.self, forKey: .retriable) ?? false
    }

    public var description: String { "\(errorClass.rawValue): \(message)" }
}

/// Which process did something: the worker id, its host and its pid.
public struct WorkerIdentity: Codable, Sendable, Hashable {
    public var id: String
    public var host: String
    public var pid: Int32
    public init(id: String, host: String, pid: Int32) { self.id = id; self.host = host; self.pid = pid }
}

/// A partition of a topic, as records name it.
public struct TopicPartitionRef: Codable, Sendable, Hashable, Comparable {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) { self.topic = topic; self.partition = partition }
    public static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
}
