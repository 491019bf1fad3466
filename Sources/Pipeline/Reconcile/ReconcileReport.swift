/// What one reconciler pass found (schema `levee.reconcile/v1`; `levee reconcile --json`).
public struct ReconcileReport: Codable, Sendable {
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
        /// Queued longer than the SLA (workers down or far behind: see `levee status`).
        public var late = 0

        enum CodingKeys: String, CodingKey { case queued, running, waitingRetry = "waiting_retry", late }
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
    public var dlq: DLQ
    public var requeued: [Requeued]
    /// Jobs with a terminal record but no `result_committed` trace event (informational).
    public var traceIncomplete: [JobID]
    public var workers: Workers

    enum CodingKeys: String, CodingKey {
        case schema, at, consistent, group, isolation, slaMs = "sla_ms", stuckAfterMs = "stuck_after_ms"
        case recordsRead = "records_read", jobs, terminal, pending, lost, stuck, duplicates, orphans, dlq, requeued
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
        let requeuedNote = lost.isEmpty ? "" : (lost.allSatisfy(\.requeued) ? " (requeued)" : lost.contains(where: \.requeued) ? " (some requeued)" : " (not requeued)")
        return "INCONSISTENT: \(lost.count) lost\(requeuedNote), \(stuck.count) stuck, \(duplicates.count) duplicate\(duplicates.count == 1 ? "" : "s"), \(orphans.count) orphan\(orphans.count == 1 ? "" : "s")"
    }
}
