import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// "Queued behind a live owner past the SLA" (lag that does not move while its owner heartbeats)
/// and the reconciler's bounded state (finished, audited jobs kept compact between passes), driven
/// record by record without a broker.
@Suite struct ReconcilerIncrementalTests {
    let base = ReconcilerStateTests()
    var t0: Timestamp { base.t0 }
    func at(_ s: Double) -> Timestamp { base.at(s) }

    func received(_ id: JobID, at time: Timestamp, partition: Int32, worker: String = "w-1") -> KafkaMessage {
        let e = TraceEvent(jobID: id, stage: .received, at: time, attempt: 1, worker: WorkerIdentity(id: worker, host: "h", pid: 1),
                           topic: base.jobs, partition: partition, offset: 0)
        return KafkaMessage(topic: base.trace, partition: 0, offset: 0, key: Array(id.description.utf8), value: Array(try! LeveeJSON.encode(e)))
    }

    func owner(_ worker: String, at time: Timestamp, holds partitions: [Int32]) -> WorkerHeartbeat {
        var b = base.beat(worker, at: time)
        b.assigned = partitions.map { TopicPartitionRef(topic: base.jobs, partition: $0) }
        return b
    }

    // MARK: - Stalled

    @Test func queuedPastTheSLABehindALiveOwnerThatReceivesNothingIsStalledNotLate() throws {
        var s = ReconcilerState()
        let a = JobID.make(at: t0), b = JobID.make(at: t0)
        s.applyJobRecord(base.job(a, offset: 0, partition: 2), retry: false)
        s.applyJobRecord(base.job(b, offset: 1, partition: 2), retry: false)
        let beats = ["w-1": owner("w-1", at: at(299.5), holds: [2])]
        let r = base.judge(s, now: at(300), heartbeats: beats).report
        #expect(r.pending.queued == 2)
        #expect(r.pending.stalled == 2)
        #expect(r.pending.late == 0, "stalled jobs are not healthy queueing")
        #expect(r.stalled.count == 1)
        let p = try #require(r.stalled.first)
        #expect(p.topic == base.jobs && p.partition == 2 && p.owner == "w-1" && p.jobs == 2 && p.lastReceivedAt == nil)
        #expect(p.ownerHeartbeatAt == at(299.5))
        #expect(!r.consistent)
        #expect(r.verdict == "INCONSISTENT: 0 lost, 0 stuck, 0 duplicates, 0 orphans, 2 queued behind a live owner past the SLA (levee.jobs[2] on w-1)")
        // The metric says so too.
        let metrics = ReconcilerMetrics()
        metrics.record(r, seconds: 0.1)
        let text = metrics.registry.render()
        #expect(text.contains("levee_reconciler_stalled_partitions 1"), "\(text)")
        #expect(text.contains(#"levee_reconciler_pending_jobs{state="stalled"} 2"#), "\(text)")
        // And the report is valid against its schema.
        let (status, output) = try SchemaTests.schemaCheck("reconcile-report", [try LeveeJSON.encode(r)])
        #expect(status == 0, "\(output)")
    }

    @Test func anOwnerStillReceivingFromThePartitionIsLateNotStalled() {
        var s = ReconcilerState()
        let queued = JobID.make(at: t0), other = JobID.make(at: t0)
        s.applyJobRecord(base.job(queued, offset: 7, partition: 2), retry: false)
        s.applyJobRecord(base.job(other, offset: 6, partition: 2), retry: false)
        s.applyTrace(received(other, at: at(295), partition: 2))  // the partition moves: far behind, not stalled
        let r = base.judge(s, now: at(300), heartbeats: ["w-1": owner("w-1", at: at(299.5), holds: [2])]).report
        #expect(r.pending.late == 1 && r.pending.stalled == 0 && r.stalled.isEmpty)
        // A partition the live worker does not hold (its owner is dead, or none): late as before.
        var t = ReconcilerState()
        t.applyJobRecord(base.job(queued, offset: 7, partition: 5), retry: false)
        let noOwner = base.judge(t, now: at(300), heartbeats: ["w-1": owner("w-1", at: at(299.5), holds: [2])]).report
        #expect(noOwner.pending.late == 1 && noOwner.stalled.isEmpty && noOwner.consistent)
        let deadOwner = base.judge(t, now: at(300), heartbeats: ["w-1": owner("w-1", at: at(200), holds: [5])]).report
        #expect(deadOwner.pending.late == 1 && deadOwner.stalled.isEmpty)
        // Within the SLA: plain queueing.
        let early = base.judge(t, now: at(5), heartbeats: ["w-1": owner("w-1", at: at(4.5), holds: [5])]).report
        #expect(early.pending.queued == 1 && early.pending.late == 0 && early.stalled.isEmpty)
    }

    // MARK: - Bounded state

    /// Feeds the same records to a state compacted after every "pass" and to one never compacted:
    /// every report must agree, while the compacted one keeps only open jobs in full.
    @Test func compactedPassesJudgeLikeTheFullStateAndKeepOnlyOpenJobs() throws {
        var compact = ReconcilerState(), full = ReconcilerState()
        func apply(_ f: (inout ReconcilerState) -> Void) { f(&compact); f(&full) }
        func judge(_ now: Timestamp, sla: Int64 = 10_000) -> (ReconcileReport, ReconcileReport, ReconcilerState.Judgement) {
            let beats = ["w-1": base.beat("w-1", at: now.adding(milliseconds: -200))]
            let c = base.judge(compact, now: now, heartbeats: beats, sla: sla)
            let f = base.judge(full, now: now, heartbeats: beats, sla: sla)
            compact.compact()
            return (c.report, f.report, c)
        }
        var ids: [JobID] = []
        // Pass 1: 50 jobs finish, traced; 2 more are queued.
        for i in 0..<52 {
            let id = JobID.make(at: t0)
            ids.append(id)
            apply { $0.applyJobRecord(base.job(id, offset: Int64(i)), retry: false) }
            guard i < 50 else { continue }
            apply { $0.applyTrace(base.event(id, .received, at: at(1))) }
            apply { $0.applyResult(base.result(id, offset: Int64(i))) }
            apply { $0.applyTrace(base.event(id, .resultCommitted, at: at(2))) }
        }
        var (c, f, _) = judge(at(3))
        #expect(c == f)
        #expect(c.jobs == 52 && c.terminal == ["succeeded": 50] && c.pending.queued == 2 && c.consistent)
        #expect(compact.jobs.count == 2 && compact.settled.count == 50, "finished jobs leave the full map")
        #expect(full.jobs.count == 52)

        // Pass 2: late events of finished jobs, a requeued copy of one, a second terminal record for
        // another, a tombstone deleting a third's result; the queued two finish.
        apply { $0.applyTrace(base.event(ids[0], .received, at: at(4), worker: "w-2")) }
        apply { $0.applyJobRecord(base.job(ids[1], offset: 60, attempt: 2), retry: false) }
        apply { $0.applyResult(base.result(ids[2], offset: 61, status: .failed, worker: "w-9")) }
        apply { $0.applyResult(base.tombstone(ids[3], offset: 62)) }
        for (n, id) in ids[50...].enumerated() {
            apply { $0.applyTrace(base.event(id, .received, at: at(4))) }
            apply { $0.applyResult(base.result(id, offset: Int64(70 + n))) }
            apply { $0.applyTrace(base.event(id, .resultCommitted, at: at(5))) }
        }
        let second = judge(at(100))
        (c, f) = (second.0, second.1)
        let judged = second.2
        #expect(c.jobs == f.jobs && c.terminal == f.terminal && c.pending == f.pending)
        #expect(c.duplicates == f.duplicates && c.orphans == f.orphans && c.stuck == f.stuck && c.traceIncomplete == f.traceIncomplete)
        #expect(c.lost == f.lost)
        #expect(c.duplicates.map(\.jobID) == [ids[2]])
        #expect(c.duplicates.first?.workers == ["w-1", "w-9"] && c.duplicates.first?.offsets == [2, 61])
        // The deleted result: lost, and repairable from the job record kept for it.
        #expect(c.lost.map(\.jobID) == [ids[3]])
        #expect(c.lost.first?.reason.contains("committed its outcome (result_committed)") == true, "\(c.lost)")
        let repair = try #require(judged.repairable.first)
        #expect(repair.0 == ids[3] && repair.1.offset == 3 && repair.1.topic == base.jobs && repair.1.attempt == 1)
        // Open in full: only the duplicate and the lost job.
        #expect(Set(compact.jobs.keys) == [ids[2], ids[3]], "\(compact.jobs.keys)")
        #expect(compact.settled.count == 50)

        // Forgetting: settled jobs whose outcome is older than the cutoff are dropped.
        compact.compact(forgetBefore: at(4.5))
        #expect(compact.settled.count == 2, "only the two that finished at 5 s remain")
        #expect(base.judge(compact, now: at(200)).report.terminal["succeeded"] == 3)
    }
}
