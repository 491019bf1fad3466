/// The metrics a worker exports on `/metrics`, registered once so the worker only increments them.
///
/// Names follow Prometheus conventions: the `levee_` prefix, `_total` on counters, base units
/// (`_seconds`), and the unit-less `_records`/`_tokens`/`_jobs` spelled out. Failure reasons are the
/// `ErrorClass` raw values, so a dashboard groups failures exactly as `levee trace` names them.
public struct WorkerMetrics: Sendable {
    public let registry: MetricsRegistry

    /// Job records taken from the job or retry topic (before validation).
    public let jobsReceived: Counter
    /// Jobs whose succeeded result was committed.
    public let jobsSucceeded: Counter
    /// Attempts that failed, by `reason` (an `ErrorClass` raw value).
    public let jobsFailed: Counter
    /// Jobs sent to the retry topic, by `reason`.
    public let retries: Counter
    /// Jobs sent to the dead-letter topic, by `reason`.
    public let deadLettered: Counter
    /// Jobs received and not yet finished.
    public let inFlight: Gauge
    /// Jobs decoded together in one engine batch.
    public let batchSize: Histogram
    /// Wall time of one inference (one job, whole generation).
    public let inferenceSeconds: Histogram
    /// Tokens per job, by `kind` (`prompt` or `completion`).
    public let tokens: Histogram
    /// From the job's submit time to the moment the worker started it.
    public let queueWaitSeconds: Histogram
    /// Kafka transactions committed.
    public let transactionCommits: Counter
    /// Kafka transactions aborted, by `reason` (e.g. `fenced`, `rebalanced`, `error`).
    public let transactionAborts: Counter
    /// Consumer group rebalances seen, by `kind` (`assigned` or `revoked`).
    public let rebalances: Counter
    /// Commits that failed and were tried again, by `reason` (librdkafka's error name in lower
    /// case, or `record_refused` when the broker refused a record and its outcome was rebuilt).
    public let commitRetries: Counter
    /// Records the broker refused for good, by `topic`: each job's outcome became a failed result.
    public let recordsRefused: Counter
    /// Records between the committed offset and the end of the partition, by `topic` and `partition`.
    public let consumerLag: Gauge
    /// Partitions currently assigned to this worker.
    public let assignedPartitions: Gauge
    /// Unix time (seconds) of the last heartbeat this worker published.
    public let lastHeartbeat: Gauge

    /// Bounds for the batch-size histogram (jobs per batch).
    public static let batchSizeBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128]
    /// Bounds for inference time: 50 ms to 5 minutes.
    public static let inferenceBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    /// Bounds for tokens per job: 8 to 8192.
    public static let tokenBuckets: [Double] = Histogram.exponentialBuckets(start: 8, factor: 2, count: 11)
    /// Bounds for queue wait: 10 ms to an hour (a backlog after a burst is what Kafka is for).
    public static let queueWaitBuckets: [Double] = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]

    public init(registry: MetricsRegistry = MetricsRegistry()) {
        self.registry = registry
        let r = registry
        jobsReceived = r.counter("levee_jobs_received_total", help: "Job records taken from the job and retry topics.")
        jobsSucceeded = r.counter("levee_jobs_succeeded_total", help: "Jobs whose succeeded result was committed.")
        jobsFailed = r.counter("levee_jobs_failed_total", help: "Job attempts that failed, by error class.",
                               labelNames: ["reason"])
        retries = r.counter("levee_job_retries_total", help: "Jobs scheduled for another attempt on the retry topic, by error class.",
                            labelNames: ["reason"])
        deadLettered = r.counter("levee_jobs_dead_lettered_total", help: "Jobs sent to the dead-letter topic, by error class.",
                                 labelNames: ["reason"])
        inFlight = r.gauge("levee_jobs_in_flight", help: "Jobs received by this worker and not yet finished.")
        batchSize = r.histogram("levee_inference_batch_size", help: "Jobs decoded together in one engine batch.",
                                buckets: Self.batchSizeBuckets)
        inferenceSeconds = r.histogram("levee_inference_duration_seconds", help: "Wall time of one job's inference.",
                                       buckets: Self.inferenceBuckets)
        tokens = r.histogram("levee_inference_tokens", help: "Tokens per job, by kind (prompt or completion).",
                             labelNames: ["kind"], buckets: Self.tokenBuckets)
        queueWaitSeconds = r.histogram("levee_job_queue_wait_seconds", help: "Time from a job's submission to the start of its inference.",
                                       buckets: Self.queueWaitBuckets)
        transactionCommits = r.counter("levee_transactions_committed_total", help: "Kafka transactions committed by this worker.")
        transactionAborts = r.counter("levee_transactions_aborted_total", help: "Kafka transactions aborted by this worker, by reason.",
                                      labelNames: ["reason"])
        rebalances = r.counter("levee_consumer_rebalances_total", help: "Consumer group rebalance events, by kind (assigned or revoked).",
                               labelNames: ["kind"])
        commitRetries = r.counter("levee_commit_retries_total", help: "Commits that failed and were tried again, by reason.",
                                  labelNames: ["reason"])
        recordsRefused = r.counter("levee_records_refused_total",
                                   help: "Records the broker refused for good (too large, invalid, not authorized), by topic; the job failed instead.",
                                   labelNames: ["topic"])
        consumerLag = r.gauge("levee_consumer_lag_records", help: "Records between this worker's committed offset and the partition's end.",
                              labelNames: ["topic", "partition"])
        assignedPartitions = r.gauge("levee_consumer_assigned_partitions", help: "Partitions currently assigned to this worker.")
        lastHeartbeat = r.gauge("levee_worker_last_heartbeat_timestamp_seconds", help: "Unix time of the last heartbeat this worker published.")
    }

    /// Counts one failed attempt under its error class.
    public func recordFailure(_ errorClass: ErrorClass) { jobsFailed.labels(errorClass.rawValue).increment() }

    /// Counts a retry scheduled after a failure of class `errorClass`.
    public func recordRetry(_ errorClass: ErrorClass) { retries.labels(errorClass.rawValue).increment() }

    /// Counts a dead-lettered job under its error class.
    public func recordDeadLetter(_ errorClass: ErrorClass) { deadLettered.labels(errorClass.rawValue).increment() }

    /// Records one finished inference: its duration and token counts.
    public func recordInference(seconds: Double, promptTokens: Int, completionTokens: Int) {
        inferenceSeconds.observe(seconds)
        tokens.labels("prompt").observe(Double(promptTokens))
        tokens.labels("completion").observe(Double(completionTokens))
    }

    /// Sets the lag of one partition.
    public func setLag(_ partition: TopicPartitionRef, records: Int64) {
        consumerLag.labels(partition.topic, String(partition.partition)).set(Double(records))
    }

    /// Forgets partitions revoked from this worker, so their lag stops being reported here.
    public func removeLag(_ partition: TopicPartitionRef) {
        consumerLag.remove(partition.topic, String(partition.partition))
    }

    /// Sets the heartbeat gauge to `secondsSince1970`.
    public func heartbeat(at secondsSince1970: Double) { lastHeartbeat.set(secondsSince1970) }
}
