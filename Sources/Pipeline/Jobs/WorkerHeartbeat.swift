/// A worker's life-cycle state as its heartbeats report it.
public enum WorkerState: String, Codable, Sendable {
    case starting, running, draining, stopped
}

/// A worker's periodic heartbeat in `levee.workers` (compacted, keyed by worker id; schema
/// `levee.worker/v1`). `levee status` and the reconciler call a worker dead when its last
/// heartbeat is older than a few intervals, and name the partitions it held.
public struct WorkerHeartbeat: Codable, Sendable, Equatable {
    public static let schemaID = "levee.worker/v1"

    public var schema: String
    public var worker: WorkerIdentity
    public var state: WorkerState
    public var at: Timestamp
    public var startedAt: Timestamp
    public var heartbeatIntervalMs: Int64
    public var version: String
    public var engine: String
    public var model: String
    public var concurrency: Int
    public var generation: Int32?
    public var assigned: [TopicPartitionRef]
    public var currentJobs: [JobID]
    public var jobsDone: Int64
    public var jobsFailed: Int64
    public var errors: Int64
    /// The jobs on the engine with when their current attempt started (absent in heartbeats
    /// from older workers), so `levee status` can name jobs running longer than `jobTimeoutMs`.
    public var running: [RunningJobRef]?
    /// The worker's limit for one attempt (absent in heartbeats from older workers).
    public var jobTimeoutMs: Int64?
    /// Present while the worker's commits keep failing: its finished jobs wait uncommitted.
    public var commitFailure: CommitFailureRef?

    public init(worker: WorkerIdentity, state: WorkerState, at: Timestamp = .now(), startedAt: Timestamp,
                heartbeatIntervalMs: Int64, version: String, engine: String, model: String, concurrency: Int,
                generation: Int32? = nil, assigned: [TopicPartitionRef] = [], currentJobs: [JobID] = [],
                jobsDone: Int64 = 0, jobsFailed: Int64 = 0, errors: Int64 = 0,
                running: [RunningJobRef]? = nil, jobTimeoutMs: Int64? = nil, commitFailure: CommitFailureRef? = nil) {
        self.schema = Self.schemaID
        self.worker = worker
        self.state = state
        self.at = at
        self.startedAt = startedAt
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.version = version
        self.engine = engine
        self.model = model
        self.concurrency = concurrency
        self.generation = generation
        self.assigned = assigned
        self.currentJobs = currentJobs
        self.jobsDone = jobsDone
        self.jobsFailed = jobsFailed
        self.errors = errors
        self.running = running
        self.jobTimeoutMs = jobTimeoutMs
        self.commitFailure = commitFailure
    }

    enum CodingKeys: String, CodingKey {
        case schema, worker, state, at, startedAt = "started_at", heartbeatIntervalMs = "heartbeat_interval_ms"
        case version, engine, model, concurrency, generation, assigned, currentJobs = "current_jobs"
        case jobsDone = "jobs_done", jobsFailed = "jobs_failed", errors, running, jobTimeoutMs = "job_timeout_ms"
        case commitFailure = "commit_failure"
    }
}

/// One job a worker is running, as its heartbeat reports it.
public struct RunningJobRef: Codable, Sendable, Equatable {
    public var jobID: JobID
    public var attempt: Int
    /// When the current attempt started on this worker.
    public var since: Timestamp
    /// The job's stage on this worker (`inference_started` while the engine runs it).
    public var stage: TraceStage

    public init(jobID: JobID, attempt: Int, since: Timestamp, stage: TraceStage = .inferenceStarted) {
        self.jobID = jobID
        self.attempt = attempt
        self.since = since
        self.stage = stage
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", attempt, since, stage
    }
}

/// A worker whose commits keep failing, as its heartbeat reports it.
public struct CommitFailureRef: Codable, Sendable, Equatable {
    /// When the first of the failures in a row happened.
    public var since: Timestamp
    /// Failed commits in a row.
    public var failures: Int
    /// The newest failure, as librdkafka described it.
    public var error: String

    public init(since: Timestamp, failures: Int, error: String) {
        self.since = since
        self.failures = failures
        self.error = error
    }
}
