import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kafka
import Synchronization
import Testing
@testable import Pipeline

/// A real worker on the embedded cluster serving `/metrics` over HTTP, the way `levee worker --http`
/// does: scraped before, during and after a burst of jobs, parsed as Prometheus text each time, and
/// its counters must move by exactly what the worker did.
@Suite(.serialized) struct OpsMetricsUnderLoadTests {
    static func scrape(_ port: UInt16) async throws -> Exposition {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/metrics")))
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        #expect(http.statusCode == 200)
        #expect((http.value(forHTTPHeaderField: "Content-Type") ?? "").hasPrefix("text/plain; version=0.0.4"))
        let exposition = try Exposition(parsing: String(decoding: data, as: UTF8.self))
        exposition.checkHistograms()
        return exposition
    }

    @Test(.timeLimit(.minutes(2))) func countersMoveByWhatTheWorkerDid() async throws {
        let jobs = 30
        let h = try PipelineHarness(partitions: 4)
        let engine = ScriptedEngine(tokenDelay: .milliseconds(2), tokens: 4)
        let worker = Worker(connection: h.connection, configuration: h.workerConfiguration("w-metrics", concurrency: 4), engine: engine)
        let listener = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: "127.0.0.1", port: 0)))
        listener.serveOperations(metrics: worker.metrics.registry) { worker.readiness }
        let port = try #require(try listener.start().port)
        defer { listener.stop() }

        let scrapes = Mutex<(before: Exposition?, during: Exposition?)>((nil, nil))
        try await WorkerEmbeddedTests.withWorkers(h, [worker]) { client, collector in
            // Ready means partitions assigned: no job has been received yet.
            for _ in 0..<300 where !worker.isReady { try await Task.sleep(for: .milliseconds(20)) }
            #expect(worker.isReady)
            let before = try await Self.scrape(port)
            scrapes.withLock { $0.before = before }
            var ids: Set<JobID> = []
            for i in 0..<jobs { ids.insert(try await client.submit(h.chatJob("load \(i)")).jobID) }
            let during = try await Self.scrape(port)  // mid-burst: must parse like any other scrape
            scrapes.withLock { $0.during = during }
            let missing = await collector.waitFor(ids, timeout: .seconds(60))
            #expect(missing.isEmpty, "jobs without a result: \(missing.count)")
            let results = collector.snapshot.results
            #expect(ids.allSatisfy { results[$0]?.status == .succeeded })
        }
        // The worker has stopped and committed everything; the registry outlives it.
        let after = try await Self.scrape(port)
        let b = try #require(scrapes.withLock { $0.before }), d = try #require(scrapes.withLock { $0.during })
        let stats = worker.statistics
        #expect(stats.succeeded == jobs && stats.received == jobs, "\(stats)")

        func delta(_ name: String, _ labels: [String: String] = [:]) -> Double {
            (after.value(name, labels) ?? 0) - (b.value(name, labels) ?? 0)
        }
        #expect(b.value("levee_jobs_received_total") == 0)
        #expect(b.value("levee_consumer_assigned_partitions") == 8, "one worker holds the 4 job and 4 retry partitions")
        #expect(delta("levee_jobs_received_total") == Double(jobs))
        #expect(delta("levee_jobs_succeeded_total") == Double(jobs))
        #expect(delta("levee_inference_duration_seconds_count") == Double(jobs))
        #expect(delta("levee_job_queue_wait_seconds_count") == Double(jobs))
        #expect(delta("levee_inference_tokens_count", ["kind": "completion"]) == Double(jobs))
        #expect(delta("levee_inference_tokens_sum", ["kind": "completion"]) == Double(4 * jobs), "4 tokens per job")
        #expect(delta("levee_inference_tokens_sum", ["kind": "prompt"]) == Double(jobs), "1 prompt token per job")
        // Every outcome went through exactly one committed transaction.
        let commits = delta("levee_transactions_committed_total")
        #expect(commits >= 1 && commits == Double(stats.transactionsCommitted), "commits \(commits) vs \(stats)")
        #expect(delta("levee_inference_batch_size_sum") == Double(jobs), "outcomes committed, summed over batches")
        let batches = delta("levee_inference_batch_size_count")
        #expect(batches >= 1 && batches <= commits)
        #expect(after.value("levee_jobs_in_flight") == 0)
        #expect(!after.samples.contains { $0.name == "levee_jobs_failed_total" }, "no failures, so no failure series")
        #expect(!after.samples.contains { $0.name == "levee_transactions_aborted_total" } == (stats.transactionsAborted == 0))
        #expect((after.value("levee_worker_last_heartbeat_timestamp_seconds") ?? 0) > Date().timeIntervalSince1970 - 120)
        // Counters never go backwards between scrapes.
        for sample in d.samples where d.types[d.family(of: sample.name)] == "counter" {
            #expect((after.value(sample.name, sample.labels) ?? -1) >= sample.value, "\(sample.name) went down")
            #expect((b.value(sample.name, sample.labels) ?? 0) <= sample.value, "\(sample.name) went down")
        }
    }
}
