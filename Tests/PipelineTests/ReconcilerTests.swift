import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// The reconciler's judgement, driven record by record (no broker): every category and the
/// evidence each one rests on.
@Suite struct ReconcilerStateTests {
    let jobs = "levee.jobs", retry = "levee.jobs.retry", results = "levee.results", trace = "levee.trace"
    let t0 = Timestamp(millisecondsSinceEpoch: 1_790_000_000_000)

    func at(_ seconds: Double) -> Timestamp { t0.adding(milliseconds: Int64(seconds * 1000)) }

    func job(_ id: JobID, offset: Int64, partition: Int32 = 0, attempt: Int = 1, topic: String? = nil,
             notBefore: Timestamp? = nil) -> KafkaMessage {
        var envelope = JobClient.makeJob(tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"))
        envelope = JobEnvelope(jobID: id, tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"),
                               attempt: attempt, submittedAt: t0, traceparent: envelope.traceparent, notBefore: notBefore)
        return KafkaMessage(topic: topic ?? jobs, partition: partition, offset: offset, key: Array(id.description.utf8),
                            value: Array(try! LeveeJSON.encode(envelope)), timestampMilliseconds: t0.millisecondsSinceEpoch)
    }

    func result(_ id: JobID, offset: Int64, partition: Int32 = 0, status: JobStatus = .succeeded, worker: String = "w-1") -> KafkaMessage {
        let record = ResultRecord(jobID: id, status: status, attempt: 1, worker: WorkerIdentity(id: worker, host: "h", pid: 1),
                                  submittedAt: t0, completedAt: at(1))
        return KafkaMessage(topic: results, partition: partition, offset: offset, key: Array(id.description.utf8),
                            value: Array(try! LeveeJSON.encode(record)))
    }

    func tombstone(_ id: JobID, offset: Int64, partition: Int32 = 0) -> KafkaMessage {
        KafkaMessage(topic: results, partition: partition, offset: offset, key: Array(id.description.utf8), value: nil)
    }

    func event(_ id: JobID, _ stage: TraceStage, at time: Timestamp, worker: String? = "w-1", attempt: Int = 1) -> KafkaMessage {
        let e = TraceEvent(jobID: id, stage: stage, at: time, attempt: attempt,
                           worker: worker.map { WorkerIdentity(id: $0, host: "h", pid: 1) })
        return KafkaMessage(topic: trace, partition: 0, offset: 0, key: Array(id.description.utf8), value: Array(try! LeveeJSON.encode(e)))
    }

    func beat(_ worker: String, at time: Timestamp, state: WorkerState = .running, current: [JobID] = []) -> WorkerHeartbeat {
        WorkerHeartbeat(worker: WorkerIdentity(id: worker, host: "h", pid: 1), state: state, at: time, startedAt: t0,
                        heartbeatIntervalMs: 1000, version: "test", engine: "e", model: "m", concurrency: 1, currentJobs: current)
    }

    func judge(_ s: ReconcilerState, now: Timestamp, committed: [TopicPartition: Int64] = [:],
               heartbeats: [String: WorkerHeartbeat] = [:], sla: Int64 = 10_000, stuck: Int64 = 60_000) -> ReconcilerState.Judgement {
        s.classify(now: now, committed: committed, heartbeats: heartbeats, slaMs: sla, stuckAfterMs: stuck, group: "g",
                   isolation: "read_committed", retryTopic: retry)
    }

    @Test func terminalDuplicateAndOrphanRecords() {
        var s = ReconcilerState()
        let a = JobID.make(at: t0), b = JobID.make(at: t0), orphan = JobID.make(at: at(5))
        s.applyJobRecord(job(a, offset: 0), retry: false)
        s.applyJobRecord(job(b, offset: 1), retry: false)
        s.applyResult(result(a, offset: 0))
        s.applyTrace(event(a, .resultCommitted, at: at(1)))
        s.applyResult(result(b, offset: 1, worker: "w-1"))
        s.applyResult(result(b, offset: 2, worker: "w-2"))
        s.applyResult(result(orphan, offset: 3, status: .failed))
        let r = judge(s, now: at(100)).report
        #expect(r.jobs == 2)
        #expect(r.terminal == ["succeeded": 2])
        #expect(r.duplicates.map(\.jobID) == [b])
        #expect(r.duplicates.first?.records == 2)
        #expect(r.duplicates.first?.workers == ["w-1", "w-2"])
        #expect(r.duplicates.first?.offsets == [1, 2])
        #expect(r.orphans.map(\.jobID) == [orphan])
        #expect(r.traceIncomplete == [b])
        #expect(!r.consistent)
        #expect(r.verdict.hasPrefix("INCONSISTENT: 0 lost, 0 stuck, 1 duplicate, 1 orphan"))
    }

    @Test func aResultOlderThanEveryJobRecordIsNotAnOrphan() {
        var s = ReconcilerState()
        let old = JobID.make(at: t0.adding(milliseconds: -86_400_000)), current = JobID.make(at: t0)
        s.applyJobRecord(job(current, offset: 0), retry: false)
        s.applyResult(result(current, offset: 0))
        s.applyResult(result(old, offset: 1))
        let r = judge(s, now: at(100)).report
        #expect(r.orphans.isEmpty)
        #expect(r.consistent)
    }

    @Test func consumedWithoutResultAndOwnerDeadIsLostOnlyAfterTheSLA() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 5), retry: false)
        s.applyTrace(event(id, .received, at: at(1), worker: "w-dead"))
        let committed = [TopicPartition(jobs, 0): Int64(6)]
        let beats = ["w-dead": beat("w-dead", at: at(1))]
        let early = judge(s, now: at(5), committed: committed, heartbeats: beats)
        #expect(early.report.lost.isEmpty)
        #expect(early.report.pending.running == 1)
        let late = judge(s, now: at(30), committed: committed, heartbeats: beats)
        #expect(late.report.lost.map(\.jobID) == [id])
        #expect(late.report.lost.first?.reason.contains("w-dead (dead)") == true)
        #expect(late.report.workers.dead == ["w-dead"])
        #expect(late.repairable.map(\.0) == [id])
        #expect(late.repairable.first?.1.offset == 5)
        #expect(!late.report.consistent)
    }

    @Test func notYetConsumedIsQueuedEvenWhenOld() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 5), retry: false)
        let r = judge(s, now: at(300), committed: [TopicPartition(jobs, 0): 5]).report
        #expect(r.lost.isEmpty)
        #expect(r.pending.queued == 1)
        #expect(r.pending.late == 1)
        #expect(r.consistent)
        #expect(r.verdict.contains("1 queued past the SLA"))
    }

    @Test func aLiveOwnerMeansRunningThenStuck() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 0), retry: false)
        s.applyTrace(event(id, .received, at: at(1), worker: "w-1"))
        s.applyTrace(event(id, .inferenceStarted, at: at(1.5), worker: "w-1"))
        let running = judge(s, now: at(20), heartbeats: ["w-1": beat("w-1", at: at(19.5), current: [id])]).report
        #expect(running.pending.running == 1)
        #expect(running.stuck.isEmpty && running.lost.isEmpty && running.consistent)
        let stuck = judge(s, now: at(100), heartbeats: ["w-1": beat("w-1", at: at(99.5), current: [id])]).report
        #expect(stuck.stuck.map(\.jobID) == [id])
        #expect(stuck.stuck.first?.stage == .inferenceStarted)
        #expect(stuck.stuck.first?.worker == "w-1")
        #expect(!stuck.consistent)
    }

    @Test func aRetryWaitsForItsTime() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 0), retry: false)
        s.applyTrace(event(id, .retryScheduled, at: at(1)))
        s.applyJobRecord(job(id, offset: 0, attempt: 2, topic: retry, notBefore: at(60)), retry: true)
        let r = judge(s, now: at(30), committed: [TopicPartition(jobs, 0): 1]).report
        #expect(r.pending.waitingRetry == 1)
        #expect(r.lost.isEmpty && r.consistent)
    }

    @Test func aTombstoneDeletesEarlierResultsInItsPartitionOnly() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 0), retry: false)
        s.applyResult(result(id, offset: 0, partition: 2))
        s.applyResult(tombstone(id, offset: 9, partition: 1))  // another partition: deletes nothing
        #expect(judge(s, now: at(100)).report.terminal == ["succeeded": 1])
        s.applyResult(tombstone(id, offset: 1, partition: 2))
        #expect(judge(s, now: at(100)).report.terminal.isEmpty)
        s.applyResult(result(id, offset: 2, partition: 2))
        let r = judge(s, now: at(100)).report
        #expect(r.terminal == ["succeeded": 1])
        #expect(r.duplicates.isEmpty)
    }

    /// The embedded mock drops transactional offsets; the attempt's outcome event (written in
    /// the same transaction) is the evidence that the record was consumed.
    @Test func anOutcomeTraceWithoutAResultIsLostEvenWithoutCommittedOffsets() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyJobRecord(job(id, offset: 3), retry: false)
        // Written by two producers: the plain producer's `received` lands after the outcome.
        s.applyTrace(event(id, .resultCommitted, at: at(2)))
        s.applyTrace(event(id, .received, at: at(1)))
        s.applyResult(result(id, offset: 0))
        s.applyResult(tombstone(id, offset: 1))
        let beats = ["w-1": beat("w-1", at: at(59.8))]
        let j = judge(s, now: at(60), heartbeats: beats)
        #expect(j.report.lost.map(\.jobID) == [id])
        #expect(j.report.lost.first?.reason.contains("committed its outcome (result_committed)") == true)
        #expect(j.repairable.count == 1)
        // After the requeue: the copy (attempt 2) is queued, not lost again.
        s.applyJobRecord(job(id, offset: 4, attempt: 2), retry: false)
        s.applyTrace(event(id, .requeued, at: at(61), worker: "reconciler", attempt: 2))
        let after = judge(s, now: at(120), heartbeats: ["w-1": beat("w-1", at: at(119.8))]).report
        #expect(after.lost.isEmpty)
        #expect(after.pending.queued == 1)
    }

    @Test func acceptedButNoJobRecordIsLostAndNotRepairable() {
        var s = ReconcilerState()
        let id = JobID.make(at: t0)
        s.applyTrace(event(id, .submitted, at: at(0), worker: "client"))
        s.applyTrace(event(id, .accepted, at: at(0.01), worker: "client"))
        let j = judge(s, now: at(100))
        #expect(j.report.lost.map(\.jobID) == [id])
        #expect(j.report.lost.first?.reason.contains("not in the jobs topic") == true)
        #expect(j.repairable.isEmpty)
    }

    @Test func deadLettersAreCountedByReason() {
        var s = ReconcilerState()
        for (i, cls) in [ErrorClass.poisonInput, .poisonInput, .deadline].enumerated() {
            let letter = DeadLetter(jobID: nil, reason: JobError(cls, "x"), original: Data("x".utf8),
                                    source: TopicPartitionRef(topic: jobs, partition: 0), sourceOffset: Int64(i))
            s.applyDeadLetter(KafkaMessage(topic: "levee.dlq", partition: 0, offset: Int64(i), key: nil,
                                           value: Array(try! LeveeJSON.encode(letter))))
        }
        let r = judge(s, now: at(1)).report
        #expect(r.dlq.total == 3)
        #expect(r.dlq.byReason == ["poison_input": 2, "deadline": 1])
        #expect(r.consistent)
    }
}

/// The reconciler against the embedded cluster with real workers.
@Suite(.serialized) struct ReconcilerEmbeddedTests {
    func reconciler(_ h: PipelineHarness, sla: Duration = .zero, dryRun: Bool = false) -> Reconciler {
        var c = Reconciler.Configuration(group: h.connection.layout.prefix + "workers")
        c.sla = sla
        c.dryRun = dryRun
        c.readTimeout = .seconds(30)
        return Reconciler(connection: h.connection, configuration: c)
    }

    func produce(_ h: PipelineHarness, topic: String, key: JobID, value: [UInt8]?) async throws {
        let producer = try KafkaProducer(configuration: h.connection.configuration())
        _ = try await producer.send(ProducerRecord(topic: topic, key: Array(key.description.utf8), value: value))
        try await producer.close()
    }

    @Test(.timeLimit(.minutes(3))) func deletedResultIsRequeuedFinishesOnceAndDuplicatesAreReported() async throws {
        let h = try PipelineHarness(partitions: 2)
        let worker = Worker(connection: h.connection, configuration: h.workerConfiguration("w-1"), engine: ScriptedEngine())
        try await WorkerEmbeddedTests.withWorkers(h, [worker]) { client, collector in
            var ids: [JobID] = []
            for i in 0..<6 { ids.append(try await client.submit(h.chatJob("r\(i)")).jobID) }
            #expect(await collector.waitFor(Set(ids), timeout: .seconds(60)).isEmpty)

            // After the burst: consistent. A second reconciler (a restart) reaches the same answer.
            let first = reconciler(h, sla: .seconds(60))
            let clean = try await first.pass()
            #expect(clean.consistent, "\(clean.verdict)")
            #expect(clean.jobs == 6)
            #expect(clean.terminal["succeeded"] == 6)
            #expect(clean.workers.alive == ["w-1"])
            let restarted = try await reconciler(h, sla: .seconds(60)).pass()
            #expect(restarted.jobs == clean.jobs && restarted.terminal == clean.terminal && restarted.consistent)
            // The first instance reads only what is new on its next pass.
            let again = try await first.pass()
            #expect((again.recordsRead["jobs"] ?? -1) == 0)
            #expect(again.jobs == 6)
            await first.close()

            // Delete one result by hand (a tombstone): the reconciler finds the job lost and requeues it.
            let victim = ids[2]
            try await produce(h, topic: h.connection.layout.results, key: victim, value: nil)
            let r = reconciler(h)
            let found = try await r.pass()
            #expect(found.lost.map(\.jobID) == [victim])
            #expect(found.lost.first?.requeued == true)
            #expect(found.requeued == [.init(jobID: victim, attempt: 2)])
            #expect(!found.consistent)
            // It runs again, once.
            #expect(await collector.waitFor([victim], timeout: .seconds(60)).isEmpty)
            #expect(collector.snapshot.results[victim]?.attempt == 2)
            #expect(collector.snapshot.duplicates[victim] == nil)
            var healed = try await r.pass()
            for _ in 0..<50 where !healed.consistent {
                try await Task.sleep(for: .milliseconds(200))
                healed = try await r.pass()
            }
            #expect(healed.consistent, "\(healed.verdict)")
            #expect(healed.requeued.isEmpty)
            #expect(healed.terminal["succeeded"] == 6)
            let trace = try #require(try await TraceReader.trace(h.connection, jobID: victim))
            #expect(trace.events.contains { $0.stage == .requeued && $0.attempt == 2 })
            #expect(trace.diagnosis.hasPrefix("requeued by the reconciler at "))
            #expect(trace.diagnosis.contains("succeeded on w-1"))

            // Plant a second terminal record by hand: reported, never "repaired".
            let dup = ids[4]
            let extra = ResultRecord(jobID: dup, status: .failed, attempt: 1, error: JobError(.other, "planted"),
                                     worker: WorkerIdentity(id: "hand", host: "h", pid: 0))
            try await produce(h, topic: h.connection.layout.results, key: dup, value: Array(try LeveeJSON.encode(extra)))
            // And a result for a job nobody submitted.
            let orphan = JobID.make()
            try await produce(h, topic: h.connection.layout.results, key: orphan,
                              value: Array(try LeveeJSON.encode(ResultRecord(jobID: orphan, status: .succeeded, attempt: 1))))
            let bad = try await r.pass()
            #expect(bad.duplicates.map(\.jobID) == [dup])
            #expect(bad.duplicates.first?.statuses == [.succeeded, .failed])
            #expect(bad.duplicates.first?.workers == ["w-1", "hand"])
            #expect(bad.orphans.map(\.jobID) == [orphan])
            #expect(bad.lost.isEmpty && bad.requeued.isEmpty)
            #expect(!bad.consistent)
            #expect(bad.verdict == "INCONSISTENT: 0 lost, 0 stuck, 1 duplicate, 1 orphan")
            let metrics = r.metrics.registry.render()
            #expect(metrics.contains("levee_reconciler_duplicate_jobs 1"))
            #expect(metrics.contains("levee_reconciler_requeued_total 1"))
            #expect(metrics.contains("levee_reconciler_consistent 0"))
            await r.close()
        }
    }

    @Test(.timeLimit(.minutes(2))) func aDryRunReportsButDoesNotRequeue() async throws {
        let h = try PipelineHarness(partitions: 1)
        let id = JobID.make()
        let job = h.chatJob("x") { $0 = JobEnvelope(jobID: id, tenant: "t", kind: .chat, model: "test-model", input: $0.input) }
        try await produce(h, topic: h.connection.layout.jobs, key: id, value: Array(try LeveeJSON.encode(job)))
        // A worker committed the outcome (its trace event) but the result is gone.
        let event = TraceEvent(jobID: id, stage: .resultCommitted, attempt: 1, worker: WorkerIdentity(id: "w-gone", host: "h", pid: 1),
                               status: .succeeded)
        try await produce(h, topic: h.connection.layout.trace, key: id, value: Array(try LeveeJSON.encode(event)))
        try await Task.sleep(for: .milliseconds(20))
        let r = reconciler(h, dryRun: true)
        let report = try await r.pass()
        #expect(report.lost.map(\.jobID) == [id])
        #expect(report.lost.first?.requeued == false)
        #expect(report.requeued.isEmpty)
        let again = try await reconciler(h, dryRun: true).pass()
        #expect(again.lost.map(\.jobID) == [id], "a dry run must leave the job lost")
        await r.close()
    }

    @Test(.timeLimit(.minutes(1))) func missingTopicsAreAClearError() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let connection = KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: TopicLayout(prefix: "none."))
        let r = Reconciler(connection: connection, configuration: .init(group: "g"))
        await #expect(throws: (any Error).self) { _ = try await r.pass() }
        do { _ = try await r.pass() } catch {
            #expect("\(error)".contains("levee topics create") || "\(error)".contains("does not exist"), "\(error)")
        }
    }
}

/// `levee trace` reads a bounded window: from the submit time to a little after the job's outcome.
@Suite struct TraceReadBoundTests {
    @Test(.timeLimit(.minutes(2))) func readingStopsSoonAfterTheOutcome() async throws {
        let h = try PipelineHarness(partitions: 1)
        let producer = try KafkaProducer(configuration: h.connection.configuration())
        let topic = h.connection.layout.trace
        func send(_ e: TraceEvent) async throws {
            try await producer.sendAndForget(ProducerRecord(topic: topic, key: Array(e.jobID.description.utf8), value: Array(try LeveeJSON.encode(e))))
        }
        let old = JobID.make(), other = JobID.make()
        let w = WorkerIdentity(id: "w-1", host: "h", pid: 1)
        // Distinct times: the reader orders by time, and events written within one millisecond
        // (fast encoding makes that common) would be ordered by stage instead.
        let t0 = Timestamp.now()
        try await send(TraceEvent(jobID: old, stage: .submitted, at: t0, attempt: 1))
        try await send(TraceEvent(jobID: old, stage: .received, at: t0.adding(milliseconds: 1), attempt: 1, worker: w))
        try await send(TraceEvent(jobID: old, stage: .resultCommitted, at: t0.adding(milliseconds: 2), attempt: 1, worker: w, status: .succeeded))
        for _ in 0..<100 { try await send(TraceEvent(jobID: other, stage: .received, attempt: 1, worker: w)) }
        // Within the window after the outcome: still read, and it extends the window.
        try await send(TraceEvent(jobID: old, stage: .requeued, at: t0.adding(milliseconds: 3), attempt: 2, detail: "late but near"))
        for _ in 0..<500 { try await send(TraceEvent(jobID: other, stage: .received, attempt: 1, worker: w)) }
        try await send(TraceEvent(jobID: old, stage: .received, attempt: 2, worker: w))
        try await producer.flush()
        let near = try #require(try await TraceReader.trace(h.connection, jobID: old, afterOutcome: 200))
        #expect(near.events.map(\.stage) == [.submitted, .received, .resultCommitted, .requeued])
        #expect(near.recordsScanned == 3 + 100 + 1 + 200, "stops 200 records after the last event of the job")
        let wide = try #require(try await TraceReader.trace(h.connection, jobID: old, afterOutcome: 2000))
        #expect(wide.events.count == 5 && wide.recordsScanned == 3 + 100 + 1 + 500 + 1)
        try await producer.close()
    }
}
