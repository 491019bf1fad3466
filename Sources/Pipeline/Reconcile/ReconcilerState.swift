import Foundation
import Kafka

/// What the reconciler knows about every job, built only from the topics (so a restarted
/// reconciler rebuilds it by reading them again) and judged by ``classify(now:committed:heartbeats:)``,
/// a pure function the tests drive directly.
struct ReconcilerState: Sendable {
    /// Where a job's newest record (the one a worker should act on next) sits.
    struct RecordRef: Sendable, Equatable {
        var topic: String
        var partition: Int32
        var offset: Int64
        var attempt: Int
        var notBefore: Timestamp?
        /// False for a record that does not decode as a job (the worker dead-letters those).
        var decodable: Bool
    }

    struct ResultRef: Sendable, Equatable {
        var status: JobStatus
        var worker: String?
        var partition: Int32
        var offset: Int64
    }

    struct EventRef: Sendable, Equatable {
        var stage: TraceStage
        var worker: String?
        var at: Timestamp
        var attempt: Int
    }

    struct Facts: Sendable {
        var latest: RecordRef?
        var submittedAt: Timestamp?
        /// The submit client's `accepted` event (the job id is durable from then on).
        var acceptedAt: Timestamp?
        /// Terminal records after the last tombstone, in partition order.
        var results: [ResultRef] = []
        /// The newest event written by a worker (or the reconciler).
        var lastWorkerEvent: EventRef?
        var lastActivity: Timestamp?
        var resultCommittedTraced = false

        mutating func touch(_ t: Timestamp) {
            if lastActivity.map({ $0 < t }) ?? true { lastActivity = t }
        }
    }

    /// Jobs still open: not finished, or finished with something to report (duplicates,
    /// orphans, an incomplete trace). Finished, audited jobs move to `settled`.
    var jobs: [JobID: Facts] = [:]
    var dlq = ReconcileReport.DLQ()
    /// Records read per topic kind since the state was created.
    var recordsRead: [String: Int] = [:]

    /// A finished, audited job in a few bytes: exactly one terminal record, its outcome traced.
    /// Kept so that a later record for it (a duplicate result, a tombstone, a requeued copy) is
    /// judged against what it was, and dropped once older than the jobs topic keeps records.
    struct SettledJob: Sendable {
        var status: UInt8
        var resultPartition: Int32
        var resultOffset: Int64
        var resultWorker: Int32
        var recordTopic: Int32
        var recordPartition: Int32
        var recordOffset: Int64
        var attempt: Int32
        var outcomeStage: Int32
        var outcomeWorker: Int32
        var outcomeAtMs: Int64
        var lastActivityMs: Int64
    }

    /// Finished jobs kept compact (see ``compact(forgetBefore:)``).
    var settled: [JobID: SettledJob] = [:]
    /// Settled jobs by the status of their terminal record.
    var settledByStatus: [String: Int] = [:]
    /// Worker ids and topic names of settled jobs, stored once.
    private var names: [String] = []
    private var nameIndex: [String: Int32] = [:]
    /// The oldest submit time of any job record read (the orphan horizon).
    var oldestJobSubmitted: Timestamp?
    /// The newest `received` event per jobs/retry partition: the partition's sign of progress.
    var partitionReceived: [TopicPartitionRef: Timestamp] = [:]

    // MARK: - Applying records

    mutating func applyJobRecord(_ message: KafkaMessage, retry: Bool) {
        guard let id = message.keyString.flatMap(JobID.init(string:)) else { return }
        let time = message.timestampMilliseconds.map(Timestamp.init(millisecondsSinceEpoch:))
        if settled[id] != nil {
            // Another copy of a finished job (a requeue raced its result, a resubmit with the same
            // idempotency key): workers skip it, it changes nothing.
            if let job = message.value.flatMap({ try? LeveeJSON.decode(JobEnvelope.self, from: Data($0)) }) {
                noteSubmitted(job.submittedAt)
            }
            return
        }
        var facts = jobs[id] ?? Facts()
        var ref = RecordRef(topic: message.topic, partition: message.partition, offset: message.offset, attempt: 1,
                            notBefore: nil, decodable: false)
        if let value = message.value, let job = try? LeveeJSON.decode(JobEnvelope.self, from: Data(value)) {
            ref.attempt = job.attempt
            ref.notBefore = job.notBefore
            ref.decodable = true
            if facts.submittedAt == nil { facts.submittedAt = job.submittedAt }
            facts.touch(job.submittedAt)
        }
        // The newest attempt is what a worker acts on next; the same attempt seen again (a
        // producer retry, a resubmit with the same idempotency key) keeps the later copy.
        if let latest = facts.latest, latest.attempt > ref.attempt {} else { facts.latest = ref }
        if let time { facts.touch(time) }
        if let submitted = facts.submittedAt { noteSubmitted(submitted) }
        jobs[id] = facts
    }

    private mutating func noteSubmitted(_ t: Timestamp) {
        if oldestJobSubmitted.map({ t < $0 }) ?? true { oldestJobSubmitted = t }
    }

    mutating func applyResult(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)) else { return }
        // A tombstone or a second terminal record for a finished job: judge it in full again.
        if settled[id] != nil { reopen(id) }
        guard let value = message.value else {
            // A tombstone: the results before it (in its partition) are deleted.
            jobs[id]?.results.removeAll { $0.partition == message.partition }
            return
        }
        guard let record = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) else { return }
        var facts = jobs[id] ?? Facts()
        facts.results.append(ResultRef(status: record.status, worker: record.worker?.id, partition: message.partition,
                                       offset: message.offset))
        facts.touch(record.completedAt)
        jobs[id] = facts
    }

    /// Only the fields the reconciler needs (cheaper than decoding the whole event).
    private struct SlimEvent: Decodable {
        struct Worker: Decodable { var id: String }
        var stage: TraceStage
        var at: Timestamp
        var attempt: Int
        var worker: Worker?
        var topic: String?
        var partition: Int32?
    }

    mutating func applyTrace(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)), let value = message.value,
              let event = try? LeveeJSON.decode(SlimEvent.self, from: Data(value)) else { return }
        if event.stage == .received, let topic = event.topic, let partition = event.partition {
            let tp = TopicPartitionRef(topic: topic, partition: partition)
            if partitionReceived[tp].map({ $0 < event.at }) ?? true { partitionReceived[tp] = event.at }
        }
        // A finished job's late events (its trace partition is read alongside its result's)
        // change nothing.
        if settled[id] != nil { return }
        var facts = jobs[id] ?? Facts()
        facts.touch(event.at)
        switch event.stage {
        case .submitted:
            if facts.submittedAt == nil { facts.submittedAt = event.at }
            if facts.latest != nil, let submitted = facts.submittedAt { noteSubmitted(submitted) }
        case .accepted:
            facts.acceptedAt = event.at
        case .unknown, .callbackFailed, .callbackDelivered, .callbackAbandoned:
            break  // callbacks follow the result; they say nothing about the job's owner
        default:
            if event.stage == .resultCommitted { facts.resultCommittedTraced = true }
            // Events come from several producers (the immediate ones on a plain producer, the
            // rest inside the transaction), so partition order is not event order: keep the
            // newest by time, and on a tie the later stage.
            let ref = EventRef(stage: event.stage, worker: event.worker?.id, at: event.at, attempt: event.attempt)
            if let last = facts.lastWorkerEvent, (last.at, Self.rank(last.stage)) > (ref.at, Self.rank(ref.stage)) {} else {
                facts.lastWorkerEvent = ref
            }
        }
        jobs[id] = facts
    }

    /// Stages in the order they happen to one attempt.
    static func rank(_ stage: TraceStage) -> Int {
        switch stage {
        case .submitted: 0
        case .accepted: 1
        case .requeued: 2
        case .received: 3
        case .inferenceStarted: 4
        case .inferenceFinished: 5
        case .handedBack: 6
        case .retryScheduled, .deadLettered, .expired, .cancelled: 7
        case .resultCommitted: 8
        case .callbackFailed, .callbackDelivered, .callbackAbandoned: 9
        case .unknown: -1
        }
    }

    /// Stages a worker writes only inside the transaction that commits the attempt's outcome
    /// together with its input offset.
    static let outcomeStages: Set<TraceStage> = [.resultCommitted, .deadLettered, .expired, .cancelled]

    mutating func applyDeadLetter(_ message: KafkaMessage) {
        guard let value = message.value, let letter = try? LeveeJSON.decode(DeadLetter.self, from: Data(value)) else { return }
        dlq.total += 1
        dlq.byReason[letter.reason.errorClass.rawValue, default: 0] += 1
    }

    // MARK: - Judging

    struct Judgement: Sendable {
        var report: ReconcileReport
        /// Lost jobs whose record can be re-enqueued, with the record to copy.
        var repairable: [(JobID, RecordRef, String)]
    }

    enum Liveness: String { case alive, dead, stopped }

    static func liveness(_ beat: WorkerHeartbeat, now: Timestamp) -> Liveness {
        if beat.state == .stopped { return .stopped }
        return beat.at.milliseconds(until: now) > 3 * max(beat.heartbeatIntervalMs, 1) ? .dead : .alive
    }

    /// Sorts every known job into terminal, pending, lost, stuck, duplicate or orphan.
    ///
    /// `committed` holds the worker group's committed offsets for the jobs and retry partitions.
    /// They must have been read *before* the topics were read to their ends: a worker commits a
    /// job's offset in the same transaction as its outcome, so any offset seen committed then has
    /// its outcome already visible in what was read after.
    func classify(now: Timestamp, committed: [TopicPartition: Int64], heartbeats: [String: WorkerHeartbeat],
                  slaMs: Int64, stuckAfterMs: Int64, group: String, isolation: String, retryTopic: String) -> Judgement {
        var report = ReconcileReport(
            at: now, consistent: true, group: group, isolation: isolation, slaMs: slaMs, stuckAfterMs: stuckAfterMs,
            recordsRead: recordsRead, jobs: 0, terminal: [:], pending: .init(), lost: [], stuck: [], duplicates: [],
            orphans: [], dlq: dlq, requeued: [], traceIncomplete: [], workers: .init())
        var repairable: [(JobID, RecordRef, String)] = []
        var live: [String: Liveness] = [:]
        for (id, beat) in heartbeats {
            let l = Self.liveness(beat, now: now)
            live[id] = l
            switch l {
            case .alive: report.workers.alive.append(id)
            case .dead: report.workers.dead.append(id)
            case .stopped: report.workers.stopped.append(id)
            }
        }
        report.workers.alive.sort(); report.workers.dead.sort(); report.workers.stopped.sort()
        // Results for jobs submitted before the oldest job record still in the jobs topic have
        // simply outlived it (results are compacted, jobs are deleted by time): not orphans.
        let horizon = oldestJobSubmitted
        // Who holds each jobs/retry partition, by the live workers' own heartbeats.
        var liveOwner: [TopicPartitionRef: WorkerHeartbeat] = [:]
        for (id, beat) in heartbeats.sorted(by: { $0.key < $1.key }) where live[id] == .alive {
            for tp in beat.assigned where liveOwner[tp] == nil { liveOwner[tp] = beat }
        }
        var stalled: [TopicPartitionRef: ReconcileReport.Stalled] = [:]
        // Settled jobs are counted, not judged again.
        report.jobs = settled.count
        report.terminal = settledByStatus.filter { $0.value > 0 }

        for (id, facts) in jobs.sorted(by: { $0.key < $1.key }) {
            let known = facts.latest != nil || facts.acceptedAt != nil
            if let first = facts.results.first {
                if !known {
                    if let horizon, (facts.submittedAt ?? id.embeddedTime ?? horizon) >= horizon {
                        report.orphans.append(.init(jobID: id, status: first.status, partition: first.partition, offset: first.offset))
                    }
                    continue
                }
                report.jobs += 1
                report.terminal[first.status.rawValue, default: 0] += 1
                if facts.results.count > 1 {
                    report.duplicates.append(.init(jobID: id, records: facts.results.count, statuses: facts.results.map(\.status),
                                                   workers: facts.results.map { $0.worker ?? "?" },
                                                   partition: first.partition, offsets: facts.results.map(\.offset)))
                }
                if !facts.resultCommittedTraced { report.traceIncomplete.append(id) }
                continue
            }
            guard known else { continue }  // trace events of a job never accepted (e.g. a failed submit)
            report.jobs += 1
            let age = (facts.lastActivity ?? facts.submittedAt ?? now).milliseconds(until: now)
            let ownerEvent = facts.lastWorkerEvent.flatMap { e in
                [.received, .inferenceStarted, .inferenceFinished].contains(e.stage) ? e : nil
            }
            let owner = ownerEvent?.worker
            let ownerState = owner.flatMap { live[$0] }
            let ownerAlive = ownerState == .alive
            let ownerHolds = owner.flatMap { heartbeats[$0] }.map { $0.currentJobs.contains(id) } ?? false

            guard let latest = facts.latest else {
                // Accepted (the submit was acknowledged) but no job record is left to run.
                if age > slaMs {
                    report.lost.append(.init(jobID: id, attempt: 1, lastStage: facts.lastWorkerEvent?.stage, lastWorker: owner,
                                             lastAt: facts.lastActivity,
                                             reason: "accepted at \(facts.acceptedAt?.description ?? "?") but its job record is not in the jobs topic (deleted, or lost by the cluster); cannot requeue",
                                             requeued: false))
                } else {
                    report.pending.queued += 1
                }
                continue
            }
            // Consumed: the group's committed offset is past the record, or the trace holds the
            // attempt's outcome event (written in the same transaction as the offset; the
            // embedded mock cluster drops transactional offsets, so this is the only sign there).
            let outcomeTraced = facts.lastWorkerEvent.map { Self.outcomeStages.contains($0.stage) && $0.attempt >= latest.attempt } ?? false
            let consumed = (committed[TopicPartition(latest.topic, latest.partition)] ?? -1) > latest.offset || outcomeTraced
            if ownerAlive, let e = ownerEvent, !consumed || ownerHolds {
                report.pending.running += 1
                if e.at.milliseconds(until: now) > stuckAfterMs {
                    report.stuck.append(.init(jobID: id, worker: owner ?? "?", stage: e.stage, since: e.at, attempt: e.attempt))
                }
                continue
            }
            if !consumed {
                if latest.topic == retryTopic, let notBefore = latest.notBefore, now < notBefore {
                    report.pending.waitingRetry += 1
                } else {
                    report.pending.queued += 1
                    guard age > slaMs else { continue }
                    // Past the SLA: behind a live owner that has received nothing from the
                    // partition for the SLA, the lag is not moving; otherwise it is late.
                    let tp = TopicPartitionRef(topic: latest.topic, partition: latest.partition)
                    let lastReceived = partitionReceived[tp]
                    if let owner = liveOwner[tp], lastReceived.map({ $0.milliseconds(until: now) > slaMs }) ?? true {
                        report.pending.stalled += 1
                        let since = facts.lastActivity ?? facts.submittedAt ?? now
                        if var s = stalled[tp] {
                            s.jobs += 1
                            if since < s.queuedSince { s.queuedSince = since; s.oldestJob = id }
                            stalled[tp] = s
                        } else {
                            stalled[tp] = .init(topic: tp.topic, partition: tp.partition, owner: owner.worker.id,
                                                ownerHeartbeatAt: owner.at, jobs: 1, oldestJob: id, queuedSince: since,
                                                lastReceivedAt: lastReceived)
                        }
                    } else {
                        report.pending.late += 1
                    }
                }
                continue
            }
            // The group has moved past the job's newest record, yet there is no terminal record.
            if age <= slaMs {
                report.pending.running += 1
                continue
            }
            let who: String
            if let last = facts.lastWorkerEvent, Self.outcomeStages.contains(last.stage), last.attempt >= latest.attempt {
                who = "\(last.worker ?? "?") committed its outcome (\(last.stage.rawValue)) at \(last.at), but results hold no terminal record (deleted?)"
            } else if let owner, let ownerEvent {
                let state = ownerState.map { $0 == .alive ? "alive, not holding it" : $0.rawValue } ?? "no heartbeat"
                who = "\(ownerEvent.stage.rawValue.replacingOccurrences(of: "_", with: " ")) by \(owner) (\(state)) at \(ownerEvent.at)"
            } else {
                who = "consumed by group \(group)"
            }
            let reason = "\(who); offset \(latest.topic)[\(latest.partition)]@\(latest.offset) committed, no terminal record"
            report.lost.append(.init(jobID: id, attempt: latest.attempt, lastStage: facts.lastWorkerEvent?.stage, lastWorker: owner,
                                     lastAt: facts.lastActivity, reason: reason, requeued: false))
            if latest.decodable { repairable.append((id, latest, reason)) }
        }
        report.stalled = stalled.values.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        report.consistent = report.lost.isEmpty && report.stuck.isEmpty && report.duplicates.isEmpty && report.orphans.isEmpty
            && report.stalled.isEmpty
        return Judgement(report: report, repairable: repairable)
    }

    // MARK: - Bounded state

    /// Moves finished, audited jobs (exactly one terminal record, the outcome traced, a job
    /// record to copy should the result be deleted later) out of `jobs` into `settled`, and
    /// forgets settled jobs whose last sign of life is before `forgetBefore` (older than the jobs
    /// topic keeps records: nothing can requeue or duplicate them any more). Later passes judge
    /// only what is still open, so a pass costs what is new, not what is known.
    mutating func compact(forgetBefore: Timestamp? = nil) {
        var done: [JobID] = []
        for (id, facts) in jobs {
            guard facts.results.count == 1, let first = facts.results.first, let latest = facts.latest, latest.decodable,
                  facts.resultCommittedTraced else { continue }
            let outcome = facts.lastWorkerEvent
            let status = JobStatus.allCases.firstIndex(of: first.status) ?? 0
            settled[id] = SettledJob(
                status: UInt8(status), resultPartition: first.partition, resultOffset: first.offset,
                resultWorker: intern(first.worker), recordTopic: intern(latest.topic), recordPartition: latest.partition,
                recordOffset: latest.offset, attempt: Int32(clamping: latest.attempt),
                outcomeStage: intern((outcome?.stage ?? .resultCommitted).rawValue),
                outcomeWorker: intern(outcome?.worker), outcomeAtMs: outcome?.at.millisecondsSinceEpoch ?? 0,
                lastActivityMs: (facts.lastActivity ?? outcome?.at)?.millisecondsSinceEpoch ?? 0)
            settledByStatus[first.status.rawValue, default: 0] += 1
            done.append(id)
        }
        for id in done { jobs[id] = nil }
        // A dictionary keeps its capacity when emptied: rebuild it once it is mostly empty.
        if jobs.capacity > 4 * jobs.count + 1024 { jobs = Dictionary(jobs.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }) }
        if let forgetBefore {
            let cutoff = forgetBefore.millisecondsSinceEpoch
            for (id, job) in settled where job.lastActivityMs < cutoff {
                settled[id] = nil
                settledByStatus[JobStatus.allCases[Int(job.status)].rawValue, default: 1] -= 1
            }
            settledByStatus = settledByStatus.filter { $0.value > 0 }
        }
    }

    /// Brings a settled job back into `jobs` as it was judged (a later record concerns it).
    mutating func reopen(_ id: JobID) {
        guard let job = settled.removeValue(forKey: id) else { return }
        let status = JobStatus.allCases[Int(job.status)]
        settledByStatus[status.rawValue, default: 1] -= 1
        if settledByStatus[status.rawValue] == 0 { settledByStatus[status.rawValue] = nil }
        let outcomeAt = Timestamp(millisecondsSinceEpoch: job.outcomeAtMs)
        let lastActivity = Timestamp(millisecondsSinceEpoch: job.lastActivityMs)
        let stage = name(job.outcomeStage).flatMap(TraceStage.init(rawValue:)) ?? .resultCommitted
        var facts = Facts()
        facts.latest = RecordRef(topic: name(job.recordTopic) ?? "", partition: job.recordPartition, offset: job.recordOffset,
                                 attempt: Int(job.attempt), notBefore: nil, decodable: true)
        facts.results = [ResultRef(status: status, worker: name(job.resultWorker), partition: job.resultPartition, offset: job.resultOffset)]
        facts.lastWorkerEvent = EventRef(stage: stage, worker: name(job.outcomeWorker), at: outcomeAt, attempt: Int(job.attempt))
        facts.lastActivity = lastActivity
        facts.resultCommittedTraced = true
        jobs[id] = facts
    }

    private mutating func intern(_ name: String?) -> Int32 {
        guard let name else { return -1 }
        if let i = nameIndex[name] { return i }
        let i = Int32(names.count)
        names.append(name)
        nameIndex[name] = i
        return i
    }

    private func name(_ index: Int32) -> String? { index >= 0 && Int(index) < names.count ? names[Int(index)] : nil }
}
