import Foundation
import Kafka
import Testing
@testable import Pipeline

/// An idempotency key resubmitted while the worker is committing the first copy's result, on
/// noida-db (real transactions: what read_committed readers see is what was committed).
///
/// The worker used to lose sight of a job between taking its outcome out of `pending` for a
/// commit and adding it to `completed` once the commit succeeded: a copy read in that window
/// passed the duplicate check, ran again and committed a second terminal record in a later
/// transaction (seen on the embedded cluster as "duplicates skipped 1, succeeded 2"). On real
/// transactions both commits are visible to read_committed readers.
@Suite(.serialized) struct IdempotentResubmitNoidaTests {
    @Test(.timeLimit(.minutes(3))) func resubmitsDuringCommitsLeaveOneCommittedResultPerKey() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped resubmitsDuringCommitsLeaveOneCommittedResultPerKey: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test sets it; or start one with scripts/noida)")
            return
        }
        let layout = TopicLayout(prefix: "i\(UUID().uuidString.prefix(8).lowercased()).", partitions: 1)
        let connection = KafkaConnection(bootstrapServers: bootstrap, layout: layout)
        _ = try await TopicProvisioner.ensureTopics(connection)
        var configuration = WorkerConfiguration(workerID: "w-idem")
        configuration.groupID = layout.prefix + "workers"
        configuration.concurrency = 4
        // Commits back to back: most of a result's way from finished to `completed` is a commit in
        // flight, the window the copies below aim at.
        configuration.commitInterval = .milliseconds(1)
        configuration.heartbeatInterval = .milliseconds(500)
        configuration.logEvents = ProcessInfo.processInfo.environment["LEVEE_TEST_LOGS"] != nil
        configuration.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]
        let worker = Worker(connection: connection, configuration: configuration, engine: ScriptedEngine(tokenDelay: .milliseconds(1), tokens: 2))
        let keys = 60
        // Each key is submitted again 1, 2, 4, 7 and 11 steps after its first copy, so copies reach
        // the worker at many distances from the first copy's commit.
        let lags = [0, 1, 2, 4, 7, 11]
        let client = try JobClient(connection: connection)
        let collector = try await ResultCollector(connection: connection)  // read_committed
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            group.addTask { try await collector.run() }
            for _ in 0..<600 where !worker.isReady { try await Task.sleep(for: .milliseconds(50)) }
            #expect(worker.isReady)
            func job(_ key: Int) -> JobEnvelope {
                JobClient.makeJob(tenant: "acme", kind: .textGenerate, model: "test-model", input: JobInput(prompt: "order \(key)"),
                                  params: JobParameters(maxTokens: 2), idempotencyKey: "order-\(key)")
            }
            var ids: Set<JobID> = []
            for step in 0..<(keys + lags.last!) {
                for lag in lags where (0..<keys).contains(step - lag) {
                    ids.insert(try await client.submit(job(step - lag)).jobID)
                }
                try await Task.sleep(for: .milliseconds(3))
            }
            #expect(ids.count == keys)
            #expect(await collector.waitFor(ids, timeout: .seconds(60)).isEmpty)
            // Every copy read and nothing left running or uncommitted, so a second run (if any)
            // has committed before the worker stops.
            let copies = keys * lags.count
            for _ in 0..<600 {
                let idle = worker.state.withLock { s in
                    s.statistics.received >= copies && s.running.isEmpty && s.queued.isEmpty && s.pending.isEmpty && !s.committing
                }
                if idle { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            worker.shutdown()
            try await group.next()
            // The collector reads read_committed: give it the last transaction's records.
            try await Task.sleep(for: .seconds(2))
            await collector.close()
            group.cancelAll()
        }
        try await client.close()
        let statistics = worker.statistics
        #expect(statistics.received == keys * lags.count)
        #expect(statistics.succeeded == keys, "jobs run to a committed result more than once: \(statistics.succeeded - keys)")
        #expect(statistics.duplicatesSkipped == keys * (lags.count - 1))
        let snapshot = collector.snapshot
        #expect(snapshot.results.count == keys)
        #expect(snapshot.duplicates.isEmpty, "committed duplicate terminal records: \(snapshot.duplicates.values.reduce(0, +))")
    }
}
