/// What one reconciler pass found (schema `levee.reconcile/v1`; `levee reconcile --json`).
public struct ReconcileReport: Codable, Sendable, Equatable {
    public static let schemaID = "levee.reconcile/v1"

    /// A job that was accepted but has no terminal record past the SLA and no live owner.
    public struct Lost: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var attempt: Int
        public var lastStage: TraceStage?
        public var lastWorker: String?
        public var lastAt: Timestamp?
        public var reason: String
        /// Whether the pass re-enqueued it (false in a dry run, or when the job record is gone).
        public var requeued: Bool

        enum CodingKeys: String, CodingKey {
            case jobID = "job_id", attempt, lastStage = "last_stage", lastWorker = "last_worker", lastAt = "last_at"
            case reason, requeued
        }
    }

    /// A job a live worker has held longer than it should.
    public struct Stuck: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var worker: String
        public var stage: TraceStage
        public var since: Timestamp
        public var attempt: Int

        enum CodingKeys: String, CodingKey { case jobID = "job_id", worker, stage, since, attempt }
    }

    /// More than one terminal record for one job.
    public struct Duplicate: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var records: Int
        public var statuses: [JobStatus]
        public var workers: [String]
        public var partition: Int32
        public var offsets: [Int64]

        enum CodingKeys: String, CodingKey { case jobID = "job_id", records, statuses, workers, partition, offsets }
    }

    /// A terminal record for a job that was never accepted.
    public struct Orphan: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var status: JobStatus
        public var partition: Int32
        public var offset: Int64

        enum CodingKeys: String, CodingKey { case jobID = "job_id", status, partition, offset }
    }

    public struct Requeued: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var attempt: Int
        enum CodingKeys: String, CodingKey { case jobID = "job_id", attempt }
    }

    public struct Pending: Codable, Sendable, Equatable {
        /// In the jobs or retry topic, not yet consumed by the group.
        public var queued = 0
        /// Held by a live worker.
        public var running = 0
        /// In the retry topic with a `not_before` still ahead.
        public var waitingRetry = 0
        /// Queued longer than the SLA while the partition has no live owner, or its owner is far
        /// behind but still moving (see `levee status`).
        public var late = 0
        /// Queued longer than the SLA in a partition a live worker holds and has received nothing
        /// from for the SLA: lag that does not move while its owner heartbeats (see `stalled`).
        /// Counted in `queued`, not in `late`.
        public var stalled = 0

        public init(queued: Int = 0, running: Int = 0, waitingRetry: Int = 0, late: Int = 0, stalled: Int = 0) {
            self.queued = queued; self.running = running; self.waitingRetry = waitingRetry; self.late = late; self.stalled = stalled
        }

        enum CodingKeys: String, CodingKey { case queued, running, waitingRetry = "waiting_retry", late, stalled }
    }

    /// A partition whose queued jobs wait past the SLA behind a live owner that receives nothing
    /// from it (a consumer paused for good, a fetcher stuck, a skipped position): the owner's
    /// heartbeats say all is well, so nothing else notices.
    public struct Stalled: Codable, Sendable, Equatable {
        public var topic: String
        public var partition: Int32
        /// The live worker whose heartbeat lists the partition as assigned.
        public var owner: String
        public var ownerHeartbeatAt: Timestamp
        /// Jobs queued in the partition past the SLA.
        public var jobs: Int
        public var oldestJob: JobID
        /// The oldest of those jobs' last sign of life (submit, requeue or retry).
        public var queuedSince: Timestamp
        /// The newest `received` event from this partition by any worker; nil when none.
        public var lastReceivedAt: Timestamp?

        enum CodingKeys: String, CodingKey {
            case topic, partition, owner, ownerHeartbeatAt = "owner_heartbeat_at", jobs, oldestJob = "oldest_job"
            case queuedSince = "queued_since", lastReceivedAt = "last_received_at"
        }

        /// "levee.jobs[3] on w-1"
        public var label: String { "\(topic)[\(partition)] on \(owner)" }
    }

    public struct DLQ: Codable, Sendable, Equatable {
        public var total = 0
        public var byReason: [String: Int] = [:]
        enum CodingKeys: String, CodingKey { case total, byReason = "by_reason" }
    }

    public struct Workers: Codable, Sendable, Equatable {
        public var alive: [String] = []
        public var dead: [String] = []
        public var stopped: [String] = []
    }

    public var schema = ReconcileReport.schemaID
    public var at: Timestamp
    public var consistent: Bool
    public var group: String
    public var isolation: String
    public var slaMs: Int64
    public var stuckAfterMs: Int64
    /// Records read per topic kind during this pass (later passes read only what is new).
    public var recordsRead: [String: Int]
    /// Distinct accepted jobs known (from the jobs and retry topics and the trace).
    public var jobs: Int
    public var terminal: [String: Int]
    public var pending: Pending
    public var lost: [Lost]
    public var stuck: [Stuck]
    public var duplicates: [Duplicate]
    public var orphans: [Orphan]
    /// Partitions whose lag does not move behind a live owner (queued past the SLA).
    public var stalled: [Stalled] = []
    public var dlq: DLQ
    public var requeued: [Requeued]
    /// Jobs with a terminal record but no `result_committed` trace event (informational).
    public var traceIncomplete: [JobID]
    public var workers: Workers

    enum CodingKeys: String, CodingKey {
        case schema, at, consistent, group, isolation, slaMs = "sla_ms", stuckAfterMs = "stuck_after_ms"
        case recordsRead = "records_read", jobs, terminal, pending, lost, stuck, duplicates, orphans, stalled, dlq, requeued
        case traceIncomplete = "trace_incomplete", workers
    }

    /// Terminal jobs (each counted once, whatever its duplicates).
    public var terminalTotal: Int { terminal.values.reduce(0, +) }

    /// The one-line verdict a human reads last.
    public var verdict: String {
        if consistent {
            let pendingCount = pending.queued + pending.running + pending.waitingRetry
            return "consistent: \(jobs) jobs, \(terminalTotal) terminal, \(pendingCount) pending"
                + (pending.late > 0 ? " (\(pending.late) queued past the SLA: are workers running? see levee status)" : "")
        }
        let stalledNote = stalled.isEmpty ? "" : ", \(pending.stalled) queued behind a live owner past the SLA ("
            + stalled.prefix(3).map(\.label).joined(separator: ", ") + (stalled.count > 3 ? ", …" : "") + ")"
        let requeuedNote = lost.isEmpty ? "" : (lost.allSatisfy(\.requeued) ? " (requeued)" : lost.contains(where: \.requeued) ? " (some requeued)" : " (not requeued)")
        return "INCONSISTENT: \(lost.count) lost\(requeuedNote), \(stuck.count) stuck, \(duplicates.count) duplicate\(duplicates.count == 1 ? "" : "s"), \(orphans.count) orphan\(orphans.count == 1 ? "" : "s")\(stalledNote)"
    }
}
