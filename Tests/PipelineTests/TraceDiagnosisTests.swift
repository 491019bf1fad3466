import Testing
@testable import Pipeline

/// The one-line diagnosis for jobs without a result (pure: events and heartbeats in, text out).
@Suite struct TraceDiagnosisTests {
    let id = JobID.make()
    let w3 = WorkerIdentity(id: "w-3", host: "gpu-3", pid: 42)
    let t0 = Timestamp(rfc3339: "2026-11-22T12:01:03.000Z")!

    func beat(_ at: Timestamp, _ state: WorkerState = .running) -> WorkerHeartbeat {
        WorkerHeartbeat(worker: w3, state: state, at: at, startedAt: t0, heartbeatIntervalMs: 2000, version: "t", engine: "e",
                        model: "m", concurrency: 1)
    }

    @Test func stuckOnADeadWorker() {
        let events = [TraceEvent(jobID: id, stage: .accepted, at: t0, attempt: 1, topic: "levee.jobs", partition: 3, offset: 9),
                      TraceEvent(jobID: id, stage: .received, at: t0, attempt: 1, worker: w3)]
        let (state, line) = TraceReader.diagnose(events: events, result: nil, heartbeats: ["w-3": beat(t0.adding(milliseconds: 7000))],
                                                 now: t0.adding(milliseconds: 60_000))
        #expect(state == "pending")
        #expect(line == "stuck: received by w-3 at 12:01:03.000, no event since, w-3 heartbeat lost at 12:01:10.000")
        let (_, alive) = TraceReader.diagnose(events: events, result: nil, heartbeats: ["w-3": beat(t0.adding(milliseconds: 59_000))],
                                              now: t0.adding(milliseconds: 60_000))
        #expect(alive.hasSuffix("w-3 is alive (heartbeat 1 s ago)"))
    }

    @Test func queuedAndWaitingForRetry() {
        let accepted = TraceEvent(jobID: id, stage: .accepted, at: t0, attempt: 1, topic: "levee.jobs", partition: 3, offset: 9)
        #expect(TraceReader.diagnose(events: [accepted], result: nil, heartbeats: [:]).1.hasPrefix("queued: accepted at 12:01:03.000 on levee.jobs[3]@9"))
        let retry = TraceEvent(jobID: id, stage: .retryScheduled, at: t0, attempt: 1, worker: w3,
                               error: JobError(.backendUnreachable, "refused", retriable: true), notBefore: t0.adding(milliseconds: 2000))
        #expect(TraceReader.diagnose(events: [accepted, retry], result: nil, heartbeats: [:]).1
                == "waiting for retry 2 at 12:01:05.000 after backend_unreachable: refused")
    }

    /// Queued past the SLA in a partition a live worker holds: the lag is not moving.
    @Test func queuedBehindALiveOwnerPastTheSLA() {
        let accepted = TraceEvent(jobID: id, stage: .accepted, at: t0, attempt: 1, topic: "levee.jobs", partition: 3, offset: 9)
        var owner = beat(t0.adding(milliseconds: 299_000))
        owner.assigned = [TopicPartitionRef(topic: "levee.jobs", partition: 3)]
        let later = t0.adding(milliseconds: 300_000)
        let (state, line) = TraceReader.diagnose(events: [accepted], result: nil, heartbeats: ["w-3": owner], now: later)
        #expect(state == "pending")
        #expect(line == "queued behind a live owner past the SLA: accepted at 12:01:03.000 on levee.jobs[3]@9, held by w-3 (alive, heartbeat 1 s ago) but not received in 300 s: the partition's lag is not moving (levee status; restart w-3)")
        // Within the SLA, or with the owner dead, or another partition held: plain queueing.
        let early = TraceReader.diagnose(events: [accepted], result: nil, heartbeats: ["w-3": owner], now: t0.adding(milliseconds: 60_000)).1
        #expect(early.hasPrefix("queued: accepted at 12:01:03.000 on levee.jobs[3]@9"))
        var dead = owner
        dead.at = t0.adding(milliseconds: 200_000)
        #expect(TraceReader.diagnose(events: [accepted], result: nil, heartbeats: ["w-3": dead], now: later).1.hasPrefix("queued: accepted"))
        var elsewhere = owner
        elsewhere.assigned = [TopicPartitionRef(topic: "levee.jobs", partition: 4)]
        #expect(TraceReader.diagnose(events: [accepted], result: nil, heartbeats: ["w-3": elsewhere], now: later).1.hasPrefix("queued: accepted"))
        // A requeued copy waiting the same way says so.
        let requeued = TraceEvent(jobID: id, stage: .requeued, at: t0, attempt: 2, worker: WorkerIdentity(id: "reconciler", host: "h", pid: 1),
                                  topic: "levee.jobs", partition: 3, offset: 12)
        #expect(TraceReader.diagnose(events: [accepted, requeued], result: nil, heartbeats: ["w-3": owner], now: later).1
            .contains("queued behind a live owner past the SLA: requeued at 12:01:03.000 on levee.jobs[3]@12"))
    }

    @Test func redeliveredThenSucceeded() {
        let w1 = WorkerIdentity(id: "w-1", host: "gpu-1", pid: 7)
        let events = [TraceEvent(jobID: id, stage: .received, at: t0, attempt: 1, worker: w3),
                      TraceEvent(jobID: id, stage: .received, at: t0.adding(milliseconds: 30_000), attempt: 1, worker: w1)]
        let result = ResultRecord(jobID: id, status: .succeeded, attempt: 1,
                                  output: ResultOutput(text: "x", finishReason: "stop", promptTokens: 1, completionTokens: 1), worker: w1)
        let (state, line) = TraceReader.diagnose(events: events, result: result, heartbeats: [:])
        #expect(state == "succeeded")
        #expect(line == "received by w-3, redelivered to w-1; succeeded on w-1")
    }
}
