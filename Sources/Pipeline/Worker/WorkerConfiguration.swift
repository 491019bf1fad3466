import Foundation

/// How a worker commits its outcomes.
public enum DeliveryGuarantee: String, Sendable, Codable {
    /// Results, trace events, retries, dead letters and the input offsets commit in one Kafka
    /// transaction: a job's outcome is committed once or not at all.
    case exactlyOnce = "exactly-once"
    /// Outcomes are produced, flushed, then the offsets committed: a crash between the two may
    /// repeat an outcome. For users who do not need transactions (and for comparison benchmarks).
    case atLeastOnce = "at-least-once"
}

/// Everything a worker can be told. Defaults suit a production worker; tests shorten the timings.
public struct WorkerConfiguration: Sendable {
    /// Stable identity: the static group member id (`group.instance.id`) and the base of the
    /// `transactional.id`, so a restarted worker fences its predecessor. Default `<host>-<pid>`.
    public var workerID: String
    public var groupID: String = "levee-workers"
    /// Jobs run at once (the engine batches them).
    public var concurrency: Int = 4
    /// Outcomes are committed at least this often...
    public var commitInterval: Duration = .milliseconds(100)
    /// ...and a transaction holds at most this many outcomes.
    public var commitBatchSize: Int = 500
    /// One attempt may run this long; then it is stopped and retried (class `timeout`).
    public var jobTimeout: Duration = .seconds(300)
    /// On shutdown, running jobs get this long to finish before they are handed back.
    public var drainTimeout: Duration = .seconds(30)
    public var backoff = Backoff()
    public var heartbeatInterval: Duration = .seconds(2)
    public var limits = JobLimits()
    public var delivery: DeliveryGuarantee = .exactlyOnce
    /// Write each trace event as a JSON line on stderr.
    public var logEvents: Bool = true
    /// Include prompts and outputs in those log lines (off: they may hold personal data).
    public var logContent: Bool = false
    /// How far back the duplicate check reads the results topic at start.
    public var duplicateWindow: Duration = .seconds(24 * 3600)
    /// Longest wait for the results index to catch up after an assignment before processing anyway.
    public var indexCatchUpTimeout: Duration = .seconds(30)
    /// Must exceed the commit interval; kept short so a crashed worker's open transaction does
    /// not block read_committed readers for long.
    public var transactionTimeout: Duration = .seconds(10)
    /// Extra librdkafka properties for the group consumer (e.g. `session.timeout.ms`).
    public var consumerProperties: [String: String] = [:]
    /// Extra librdkafka properties for the producers.
    public var producerProperties: [String: String] = [:]
    /// Commits that keep failing this long make the worker unready (`/readyz` 503, the reason in
    /// `levee status`); it keeps retrying meanwhile, waiting up to `commitRetryMaxDelay` between tries.
    public var commitFailureGrace: Duration = .seconds(10)
    public var commitRetryMaxDelay: Duration = .seconds(5)

    public init(workerID: String = WorkerConfiguration.defaultWorkerID()) {
        self.workerID = workerID
    }

    public static func defaultWorkerID() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }
}

/// Counters a worker keeps (for heartbeats, status and tests).
public struct WorkerStatistics: Sendable, Equatable, Codable {
    public var received = 0
    public var succeeded = 0
    public var failed = 0
    public var expired = 0
    public var cancelled = 0
    public var retried = 0
    public var deadLettered = 0
    public var duplicatesSkipped = 0
    public var handedBack = 0
    public var transactionsCommitted = 0
    public var transactionsAborted = 0
    public var rebalances = 0
    /// Records the broker refused for good (too large, invalid, not authorized): each job's outcome
    /// was rebuilt as a failed result of class `record_rejected`.
    public var recordsRefused = 0
    /// Commits that failed and were tried again.
    public var commitRetries = 0

    public init() {}

    public var terminal: Int { succeeded + failed + expired + cancelled }
}
