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

    var jobs: [JobID: Facts] = [:]
    var dlq = ReconcileReport.DLQ()
    /// Records read per topic kind since the state was created.
    var recordsRead: [String: Int] = [:]

    // MARK: - Applying records

    mutating func applyJobRecord(_ message: KafkaMessage, retry: Bool) {
        guard let id = message.keyString.flatMap(JobID.init(string:)) else { return }
        let time = message.timestampMilliseconds.map(Timestamp.init(millisecondsSinceEpoch:))
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
        jobs[id] = facts
    }

    mutating func applyResult(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)) else { return }
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
    }

    mutating func applyTrace(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)), let value = message.value,
              let event = try? LeveeJSON.decode(SlimEvent.self, from: Data(value)) else { return }
        var facts = jobs[id] ?? Facts()
        facts.touch(event.at)
        switch event.stage {
        case .submitted:
            if facts.submittedAt == nil { facts.submittedAt = event.at }
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
        let horizon = jobs.values.compactMap { $0.latest != nil ? $0.submittedAt : nil }.min()

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
                    if age > slaMs { report.pending.late += 1 }
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
        report.consistent = report.lost.isEmpty && report.stuck.isEmpty && report.duplicates.isEmpty && report.orphans.isEmpty
        return Judgement(report: report, repairable: repairable)
    }
}
