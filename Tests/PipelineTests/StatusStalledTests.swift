import Foundation
import Kafka
import Testing
@testable import Pipeline

/// `levee status` names a partition whose lag does not move while its owner heartbeats: the first
/// unfinished record waits past the limit, a live worker holds the partition and is not running it,
/// and the job has no result.
@Suite(.serialized) struct StatusStalledTests {
    @Test(.timeLimit(.minutes(2))) func aPartitionQueuedBehindALiveOwnerThatDoesNotMoveIsAnIssue() async throws {
        let h = try PipelineHarness(partitions: 1)
        let layout = h.connection.layout
        let group = layout.prefix + "workers"
        let job = h.chatJob("waiting")
        let producer = try KafkaProducer(configuration: h.connection.configuration())
        _ = try await producer.send(ProducerRecord(topic: layout.jobs, key: Array(job.jobID.description.utf8),
                                                   value: Array(try LeveeJSON.encode(job))))
        // Judged 300 s later, with the owner's heartbeat fresh then.
        let later = Timestamp.now().adding(milliseconds: 300_000)
        let owned = [TopicPartitionRef(topic: layout.jobs, partition: 0), TopicPartitionRef(topic: layout.retry, partition: 0)]
        try await StatusTests.plant(h, [StatusTests.beat("w-owner", at: later.adding(milliseconds: -200), assigned: owned)])

        let report = await StatusReader.read(connection: h.connection, group: group, now: later, options: StatusTests.fast(group))
        #expect(report.lag.total == 1, "\(report.lag)")
        let stalled = try #require(report.stalled.first, "\(report.summary)")
        #expect(report.stalled.count == 1)
        #expect(stalled.topic == layout.jobs && stalled.partition == 0 && stalled.owner == "w-owner")
        #expect(stalled.jobID == job.jobID && stalled.offset == 0 && stalled.lag == 1 && stalled.limitMs == 120_000)
        #expect(stalled.waitingMs >= 290_000)
        let issue = try #require(report.issues.first { $0.kind == "stalled_partition" })
        #expect(issue.summary == "\(layout.jobs)[0] queued behind live w-owner, not moving")
        #expect(issue.detail.contains("levee trace \(job.jobID)"))
        #expect(report.verdict == .attention)
        let (status, output) = try SchemaTests.schemaCheck("status-report", [try LeveeJSON.encode(report)])
        #expect(status == 0, "\(output)")

        // Within the limit it is plain queueing.
        var lenient = StatusTests.fast(group)
        lenient.stalledAfter = .seconds(600)
        let calm = await StatusReader.read(connection: h.connection, group: group, now: later, options: lenient)
        #expect(calm.stalled.isEmpty && !calm.issues.contains { $0.kind == "stalled_partition" })

        // A head record that has its result only shows uncommitted offsets (the mock's way): not stalled.
        _ = try await producer.send(ProducerRecord(topic: layout.results, key: Array(job.jobID.description.utf8),
                                                   value: Array(try LeveeJSON.encode(ResultRecord(jobID: job.jobID, status: .succeeded, attempt: 1,
                                                                                                  output: ResultOutput(text: "x", finishReason: "stop", promptTokens: 1, completionTokens: 1))))))
        try await producer.close()
        let finished = await StatusReader.read(connection: h.connection, group: group, now: later, options: StatusTests.fast(group))
        #expect(finished.stalled.isEmpty, "\(finished.stalled)")
    }

    @Test func theOwnerRunningTheHeadJobOrNoLiveOwnerIsNotStalled() {
        let now = Timestamp.now()
        let job = JobEnvelope(jobID: JobID.make(), tenant: "t", kind: .textGenerate, model: "m", input: JobInput(prompt: "p"),
                              submittedAt: now.adding(milliseconds: -600_000))
        let head = KafkaMessage(topic: "levee.jobs", partition: 3, offset: 40, key: Array(job.jobID.description.utf8),
                                value: Array(try! LeveeJSON.encode(job)), timestampMilliseconds: now.adding(milliseconds: -600_000).millisecondsSinceEpoch)
        let lag = [StatusReport.PartitionLag(topic: "levee.jobs", partition: 3, committed: 40, low: 0, high: 90, lag: 50)]
        let tp = TopicPartitionRef(topic: "levee.jobs", partition: 3)
        func workers(_ beats: [WorkerHeartbeat]) -> [StatusReport.Worker] {
            StatusReader.classify(Dictionary(uniqueKeysWithValues: beats.map { ($0.worker.id, $0) }), now: now)
        }
        let idle = workers([StatusTests.beat("w-1", at: now.adding(milliseconds: -100), assigned: [tp])])
        #expect(StatusReader.stalledCandidates(heads: [head], lag: lag, workers: idle, now: now, limit: .seconds(120)).map(\.owner) == ["w-1"])
        let busy = workers([StatusTests.beat("w-1", at: now.adding(milliseconds: -100), assigned: [tp],
                                             running: [RunningJobRef(jobID: job.jobID, attempt: 1, since: now.adding(milliseconds: -1000))])])
        #expect(StatusReader.stalledCandidates(heads: [head], lag: lag, workers: busy, now: now, limit: .seconds(120)).isEmpty)
        let dead = workers([StatusTests.beat("w-1", at: now.adding(milliseconds: -60_000), assigned: [tp])])
        #expect(StatusReader.stalledCandidates(heads: [head], lag: lag, workers: dead, now: now, limit: .seconds(120)).isEmpty)
        // A retry waits from its not_before, not from when it was produced.
        var retry = job
        retry.notBefore = now.adding(milliseconds: -30_000)
        let retryHead = KafkaMessage(topic: "levee.jobs", partition: 3, offset: 40, key: head.key, value: Array(try! LeveeJSON.encode(retry)),
                                     timestampMilliseconds: head.timestampMilliseconds)
        #expect(StatusReader.stalledCandidates(heads: [retryHead], lag: lag, workers: idle, now: now, limit: .seconds(120)).isEmpty)
    }
}
