import Foundation
import Kafka

/// What `levee bench reconcile` measures: the reconciler's own work per pass (applying records,
/// judging, keeping state) as the number of jobs it knows grows, with finished jobs kept compact
/// (`compact`, the default) or in full (as before). Records are built as they come off the wire
/// (JSON job envelopes, results and trace events keyed by job id) and go through the reconciler's
/// real code; reading them from Kafka is not included (a running reconciler's reads resume where
/// the last pass stopped, so they cost what is new either way).
public enum ReconcilerStateBenchmark {
    public struct Result: Codable, Sendable {
        public var compact: Bool
        public var jobs: Int
        public var newPerPass: Int
        /// Seconds to put the known jobs into the state (as the state their records leave).
        public var buildSeconds: Double
        /// The first judgement over all jobs (and, compacting, moving them to the compact set).
        public var firstJudgeSeconds: Double
        /// Resident memory growth from before the build to after the first pass (bytes).
        public var stateBytes: Int64
        /// The process's peak resident memory (VmHWM) at the end (bytes).
        public var peakBytes: Int64
        /// Per later pass: apply `newPerPass` new jobs' records, judge, compact.
        public var passMilliseconds: [Double]
        /// Jobs kept in full, and kept compact, after the last pass.
        public var openJobs: Int
        public var settledJobs: Int
        /// The last report's job count (every job, open or settled).
        public var reportedJobs: Int

        enum CodingKeys: String, CodingKey {
            case compact, jobs, newPerPass = "new_per_pass", buildSeconds = "build_seconds", firstJudgeSeconds = "first_judge_seconds"
            case stateBytes = "state_bytes", peakBytes = "peak_bytes", passMilliseconds = "pass_ms", openJobs = "open_jobs", settledJobs = "settled_jobs"
            case reportedJobs = "reported_jobs"
        }
    }

    /// Resident set size of this process (Linux /proc/self/statm), 0 where unknown.
    public static func residentBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Peak resident set size (VmHWM in /proc/self/status), 0 where unknown.
    public static func peakResidentBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return 0 }
        return (Int64(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// The four records one finished job leaves for the reconciler: its job record, `received`,
    /// its result and `result_committed`, on `partitions` partitions of each topic.
    static func records(index: Int, base: Timestamp, partitions: Int32) -> [KafkaMessage] {
        let submitted = base.adding(milliseconds: Int64(index))
        let id = JobID.make(at: submitted)
        let key = Array(id.description.utf8)
        let p = Int32(index % Int(partitions))
        let offset = Int64(index / Int(partitions))
        let worker = WorkerIdentity(id: "w-\(index % 8)", host: "h", pid: 1)
        let job = JobEnvelope(jobID: id, tenant: "bench", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"),
                              submittedAt: submitted)
        let received = TraceEvent(jobID: id, stage: .received, at: submitted.adding(milliseconds: 5), attempt: 1, worker: worker,
                                  topic: "levee.jobs", partition: p, offset: offset)
        let result = ResultRecord(jobID: id, status: .succeeded, attempt: 1, worker: worker, submittedAt: submitted,
                                  completedAt: submitted.adding(milliseconds: 50))
        let committed = TraceEvent(jobID: id, stage: .resultCommitted, at: submitted.adding(milliseconds: 50), attempt: 1, worker: worker,
                                   status: .succeeded)
        func message(_ topic: String, _ value: some Encodable) -> KafkaMessage {
            KafkaMessage(topic: topic, partition: p, offset: offset, key: key, value: Array((try? LeveeJSON.encode(value)) ?? Data()),
                         timestampMilliseconds: submitted.millisecondsSinceEpoch)
        }
        return [message("levee.jobs", job), message("levee.trace", received), message("levee.results", result),
                message("levee.trace", committed)]
    }

    static func apply(_ state: inout ReconcilerState, _ messages: [KafkaMessage]) {
        // (Also the records of the measured passes.)
        for m in messages {
            switch m.topic {
            case "levee.jobs": state.applyJobRecord(m, retry: false)
            case "levee.results": state.applyResult(m)
            default: state.applyTrace(m)
            }
        }
    }

    /// Builds the state for `jobs` finished jobs, judges it once, then runs `passes` passes of
    /// `newPerPass` new finished jobs each. `progress` hears how far the build is.
    public static func run(jobs: Int, newPerPass: Int, passes: Int, compact: Bool, partitions: Int32 = 64,
                           progress: (Int) -> Void = { _ in }) -> Result {
        let base = Timestamp.now().adding(milliseconds: -Int64(jobs + newPerPass * passes) - 3_600_000)
        let before = residentBytes()
        var state = ReconcilerState()
        let buildStart = ContinuousClock.now
        for i in 0..<jobs {
            // Known jobs go in as the state their four records leave (decoding millions of JSON
            // records would take this shared machine most of an hour); the measured passes
            // below apply real records.
            state.insertFinished(index: i, base: base, partitions: partitions)
            // As the reconciler does while it reads (every `compactEvery` records, 4 per job).
            if compact && (i + 1) % (Reconciler.compactEvery / 4) == 0 { state.compact() }
            if i > 0 && i % 200_000 == 0 { progress(i) }
        }
        let buildSeconds = (ContinuousClock.now - buildStart).seconds
        let now = Timestamp.now()
        func judge() -> ReconcileReport {
            let report = state.classify(now: now, committed: [:], heartbeats: [:], slaMs: 120_000, stuckAfterMs: 600_000,
                                        group: "bench", isolation: "read_committed", retryTopic: "levee.jobs.retry").report
            if compact { state.compact() }
            return report
        }
        let judgeStart = ContinuousClock.now
        var report = judge()
        let firstJudgeSeconds = (ContinuousClock.now - judgeStart).seconds
        let after = residentBytes()
        var passMs: [Double] = []
        var next = jobs
        for _ in 0..<passes {
            // The new records are built before the clock starts: building them stands in for
            // reading them, which is not what is measured here.
            var fresh: [KafkaMessage] = []
            fresh.reserveCapacity(newPerPass * 4)
            for i in next..<(next + newPerPass) { fresh += records(index: i, base: base, partitions: partitions) }
            next += newPerPass
            let t = ContinuousClock.now
            apply(&state, fresh)
            report = judge()
            passMs.append((ContinuousClock.now - t).seconds * 1000)
        }
        return Result(compact: compact, jobs: jobs, newPerPass: newPerPass, buildSeconds: buildSeconds,
                      firstJudgeSeconds: firstJudgeSeconds, stateBytes: after - before, peakBytes: peakResidentBytes(),
                      passMilliseconds: passMs,
                      openJobs: state.jobs.count, settledJobs: state.settled.count, reportedJobs: report.jobs)
    }
}

extension ReconcilerState {
    /// The state a finished job's four records (see ``ReconcilerStateBenchmark``) leave, without
    /// decoding them: the same facts `applyJobRecord`, `applyTrace` and `applyResult` record.
    mutating func insertFinished(index: Int, base: Timestamp, partitions: Int32) {
        let submitted = base.adding(milliseconds: Int64(index))
        let id = JobID.make(at: submitted)
        let p = Int32(index % Int(partitions))
        let offset = Int64(index / Int(partitions))
        let worker = "w-\(index % 8)"
        var facts = Facts()
        facts.latest = RecordRef(topic: "levee.jobs", partition: p, offset: offset, attempt: 1, notBefore: nil, decodable: true)
        facts.submittedAt = submitted
        facts.results = [ResultRef(status: .succeeded, worker: worker, partition: p, offset: offset)]
        let done = submitted.adding(milliseconds: 50)
        facts.lastWorkerEvent = EventRef(stage: .resultCommitted, worker: worker, at: done, attempt: 1)
        facts.lastActivity = done
        facts.resultCommittedTraced = true
        jobs[id] = facts
        if oldestJobSubmitted.map({ submitted < $0 }) ?? true { oldestJobSubmitted = submitted }
        let tp = TopicPartitionRef(topic: "levee.jobs", partition: p)
        if partitionReceived[tp].map({ $0 < submitted }) ?? true { partitionReceived[tp] = submitted.adding(milliseconds: 5) }
    }
}
