import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// A job whose inference outlasts `max.poll.interval.ms` (embedded mock cluster; the synthetic
/// engine stands in for a slow model). The worker's consumer keeps polling on its own thread
/// while the engine runs, so the group must not think the worker is stuck: no rebalance, the job
/// is not redelivered, and it ends with exactly one result. The transaction starts only when the
/// result is ready, so inference longer than `transaction.timeout.ms` (10 s) is fine too.
@Suite(.serialized) struct LongInferenceTests {
    @Test(.timeLimit(.minutes(3))) func inferenceLongerThanMaxPollIntervalGivesOneResultAndNoRebalance() async throws {
        let h = try PipelineHarness(partitions: 1)
        // Twice the poll interval per job, two jobs run one after the other: 24 s with no poll
        // from the application's point of view... if the worker polled only between jobs.
        let maxPollMs = 6000
        let engine = try SyntheticEngine(configuration: .init(delay: .fixed(.milliseconds(2 * maxPollMs)), tokensPerRequest: 4))
        var config = h.workerConfiguration("w-long", concurrency: 1)
        // librdkafka requires max.poll.interval.ms ≥ session.timeout.ms (6000 in the harness).
        config.consumerProperties["max.poll.interval.ms"] = String(maxPollMs)
        let worker = Worker(connection: h.connection, configuration: config, engine: engine)
        let jobs = [h.chatJob("slow one"), h.chatJob("slow two")]
        let ids = jobs.map(\.jobID)
        try await WorkerEmbeddedTests.withWorkers(h, [worker]) { client, collector in
            for _ in 0..<600 where !worker.isReady { try await Task.sleep(for: .milliseconds(50)) }
            try #require(worker.isReady, "the worker never joined the group")
            #expect(worker.metrics.rebalances.value("assigned") == 1)
            for job in jobs { _ = try await client.submit(job) }
            let missing = await collector.waitFor(Set(ids), timeout: .seconds(120))
            #expect(missing.isEmpty, "jobs without a result: \(missing)")
            let snap = collector.snapshot
            #expect(snap.duplicates.isEmpty, "duplicate results: \(snap.duplicates)")
            for id in ids {
                #expect(snap.results[id]?.status == .succeeded, "\(String(describing: snap.results[id]))")
                #expect(snap.results[id]?.attempt == 1)
                #expect((snap.results[id]?.timings?.inferenceMs ?? 0) >= Int64(2 * maxPollMs), "the engine really ran that long")
            }
            // No rebalance storm: the only assignment is the first one, nothing was revoked, and
            // the worker still holds its partitions.
            #expect(worker.metrics.rebalances.value("assigned") == 1)
            #expect(worker.metrics.rebalances.value("revoked") == 0)
            #expect(worker.isReady)
        }
        let s = worker.statistics
        #expect(s.rebalances == 1, "assignments seen: \(s.rebalances)")
        #expect(s.received == 2 && s.succeeded == 2, "\(s)")
        #expect(s.handedBack == 0 && s.duplicatesSkipped == 0, "\(s)")
        // Not redelivered: each job was received and run once.
        for id in ids {
            let trace = try #require(try await TraceReader.trace(h.connection, jobID: id))
            let stages = trace.events.map(\.stage)
            #expect(stages.filter { $0 == .received }.count == 1, "\(stages)")
            #expect(stages.filter { $0 == .inferenceStarted }.count == 1, "\(stages)")
            #expect(stages.filter { $0 == .resultCommitted }.count == 1, "\(stages)")
            #expect(trace.state == "succeeded", "\(trace.diagnosis)")
        }
    }
}
