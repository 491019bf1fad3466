import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// The worker against librdkafka's embedded mock cluster. The mock does not enforce transactions
/// (see KAFKA-HERE.md), so these tests check routing, outcomes and offsets; the transaction
/// guarantee itself is tested against noida-db.
@Suite(.serialized) struct WorkerEmbeddedTests {
    @Test(.timeLimit(.minutes(2))) func jobsThroughTwoWorkersEndWithOneResultEach() async throws {
        let h = try PipelineHarness(partitions: 4)
        let engine = ScriptedEngine()
        let workers = [Worker(connection: h.connection, configuration: h.workerConfiguration("w-a"), engine: engine),
                       Worker(connection: h.connection, configuration: h.workerConfiguration("w-b"), engine: engine)]
        let client = try JobClient(connection: h.connection)
        let collector = try await ResultCollector(connection: h.connection)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in workers { group.addTask { try await w.run() } }
            group.addTask { try await collector.run() }
            var ids: Set<JobID> = []
            for i in 0..<40 {
                let receipt = try await client.submit(h.chatJob("job \(i)"))
                #expect(receipt.offset >= 0)
                ids.insert(receipt.jobID)
            }
            let missing = await collector.waitFor(ids, timeout: .seconds(60))
            #expect(missing.isEmpty, "jobs without a result: \(missing.count)")
            for w in workers { w.shutdown() }
            try await group.next()
            try await group.next()
            let snap = collector.snapshot
            #expect(snap.duplicates.isEmpty, "duplicate results: \(snap.duplicates)")
            #expect(ids.allSatisfy { snap.results[$0]?.status == .succeeded })
            #expect(snap.results[ids.first!]?.output?.text.hasPrefix("echo:job") == true)
            let done = workers.map(\.statistics.succeeded).reduce(0, +)
            #expect(done == 40)
            await collector.close()
            group.cancelAll()
        }
        try await client.close()
    }

    /// Runs `workers` while `body` submits and waits, then shuts them down gracefully.
    static func withWorkers(_ h: PipelineHarness, _ workers: [Worker],
                            _ body: @Sendable (JobClient, ResultCollector) async throws -> Void) async throws {
        let client = try JobClient(connection: h.connection)
        let collector = try await ResultCollector(connection: h.connection)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in workers { group.addTask { try await w.run() } }
            group.addTask { try await collector.run() }
            try await body(client, collector)
            for w in workers { w.shutdown() }
            for _ in workers { try await group.next() }
            await collector.close()
            group.cancelAll()
        }
        try await client.close()
    }

    @Test(.timeLimit(.minutes(2))) func poisonOversizeExpiredCancelledAndRetriedJobs() async throws {
        let h = try PipelineHarness(partitions: 2)
        let engine = ScriptedEngine(tokenDelay: .milliseconds(5), failures: ["flaky": 2])
        var config = h.workerConfiguration("w-1")
        config.limits.maxRecordBytes = 2048
        let worker = Worker(connection: h.connection, configuration: config, engine: engine)
        try await Self.withWorkers(h, [worker]) { client, collector in
            let producer = try KafkaProducer(configuration: h.connection.configuration())
            // Poison: not JSON at all, keyed by a job id so a failed result can name it.
            let poisonID = JobID.make()
            _ = try await producer.send(ProducerRecord(topic: h.connection.layout.jobs, key: Array(poisonID.description.utf8),
                                                       value: Array("{\"schema\": levee".utf8)))
            // Oversize for this worker (the client's limit is larger).
            let big = h.chatJob(String(repeating: "x", count: 4000))
            let bigReceipt = try await client.submit(big)
            // Expired: a deadline already in the past when the worker sees it.
            let expired = h.chatJob("late") { $0.deadline = $0.submittedAt.adding(milliseconds: 1) }
            try await Task.sleep(for: .milliseconds(5))
            _ = try await producer.send(ProducerRecord(topic: h.connection.layout.jobs, key: Array(expired.jobID.description.utf8),
                                                       value: Array(try LeveeJSON.encode(expired))))
            // Fails twice with a retriable error, then succeeds on the third attempt.
            let flaky = try await client.submit(h.chatJob("flaky"))
            let good = try await client.submit(h.chatJob("fine"))
            let missing = await collector.waitFor([poisonID, bigReceipt.jobID, expired.jobID, flaky.jobID, good.jobID], timeout: .seconds(60))
            #expect(missing.isEmpty)
            let r = collector.snapshot.results
            #expect(r[poisonID]?.status == .failed && r[poisonID]?.error?.errorClass == .poisonInput)
            #expect(r[poisonID]?.error?.message.hasPrefix("invalid JSON") == true)
            #expect(r[bigReceipt.jobID]?.status == .failed && r[bigReceipt.jobID]?.error?.message.contains("limit is 2048") == true)
            #expect(r[expired.jobID]?.status == .expired && r[expired.jobID]?.error?.errorClass == .deadline)
            #expect(r[flaky.jobID]?.status == .succeeded && r[flaky.jobID]?.attempt == 3)
            #expect(r[good.jobID]?.status == .succeeded)
            #expect(collector.snapshot.duplicates.isEmpty)
            // The dead letters hold the original bytes.
            let dlq = try await KafkaConsumer.readWindow(configuration: h.connection.configuration(),
                                                         partition: TopicPartition(h.connection.layout.deadLetters, 0), from: KafkaOffset.beginning, maxMessages: 10)
            let letters = dlq.compactMap { $0.value.flatMap { try? LeveeJSON.decode(DeadLetter.self, from: Data($0)) } }
            #expect(letters.contains { $0.jobID == poisonID && String(decoding: $0.original, as: UTF8.self) == "{\"schema\": levee" })
            #expect(letters.contains { $0.jobID == bigReceipt.jobID })
            try await producer.close()

            // The trace explains each outcome in one line.
            let flakyTrace = try #require(try await TraceReader.trace(h.connection, jobID: flaky.jobID))
            #expect(flakyTrace.state == "succeeded")
            #expect(flakyTrace.diagnosis.hasPrefix("retried 2× after backend unreachable, succeeded on w-1"), "\(flakyTrace.diagnosis)")
            let stages = flakyTrace.events.map(\.stage)
            #expect(stages.first == .submitted && stages.contains(.accepted) && stages.last == .resultCommitted, "\(stages)")
            #expect(stages.filter { $0 == .received }.count == 3 && stages.filter { $0 == .retryScheduled }.count == 2)
            #expect(flakyTrace.events.first { $0.stage == .received }?.partition != nil)
            let retryErrors = flakyTrace.events.filter { $0.stage == .retryScheduled }.map { $0.error?.errorClass }
            #expect(retryErrors == [.backendUnreachable, .backendUnreachable], "each retry carries its error")
            #expect(flakyTrace.events.filter { $0.stage == .retryScheduled }.allSatisfy { $0.notBefore != nil && $0.error?.message.contains("scripted failure") == true })
            let poisonTrace = try #require(try await TraceReader.trace(h.connection, jobID: poisonID))
            #expect(poisonTrace.diagnosis.hasPrefix("poison: invalid JSON") && poisonTrace.diagnosis.hasSuffix("in DLQ"), "\(poisonTrace.diagnosis)")
            let expiredTrace = try #require(try await TraceReader.trace(h.connection, jobID: expired.jobID))
            #expect(expiredTrace.state == "expired" && expiredTrace.diagnosis.hasPrefix("expired: deadline"))
            #expect(try await TraceReader.trace(h.connection, jobID: JobID.make()) == nil, "an unknown job has no trace")
        }
        let s = worker.statistics
        #expect(s.retried == 2 && s.deadLettered == 2 && s.expired == 1)
    }

    @Test(.timeLimit(.minutes(2))) func cancellingARunningJobStopsItBetweenTokens() async throws {
        let h = try PipelineHarness(partitions: 1)
        let engine = ScriptedEngine(tokenDelay: .milliseconds(100), tokens: 400)
        let worker = Worker(connection: h.connection, configuration: h.workerConfiguration("w-1"), engine: engine)
        try await Self.withWorkers(h, [worker]) { client, collector in
            let long = try await client.submit(h.chatJob("long") { $0.params.maxTokens = 400 })
            // Wait until it runs, then cancel it.
            for _ in 0..<200 where worker.state.withLock({ $0.running.isEmpty }) { try await Task.sleep(for: .milliseconds(20)) }
            try await client.cancel(long.jobID, reason: "test")
            let missing = await collector.waitFor([long.jobID], timeout: .seconds(30))
            #expect(missing.isEmpty)
            let result = collector.snapshot.results[long.jobID]
            #expect(result?.status == .cancelled && result?.error?.errorClass == .cancelled)
            // Cancelled before it starts: a second job cancelled at once.
            let queued = h.chatJob("never")
            try await client.cancel(queued.jobID)
            try await Task.sleep(for: .milliseconds(300))
            _ = try await client.submit(queued)
            #expect(await collector.waitFor([queued.jobID], timeout: .seconds(30)).isEmpty)
            #expect(collector.snapshot.results[queued.jobID]?.status == .cancelled)
            // The trace says so in one line, with the stage the job reached.
            let trace = try #require(try await TraceReader.trace(h.connection, jobID: long.jobID))
            #expect(trace.state == "cancelled")
            #expect(trace.diagnosis.hasPrefix("cancelled on w-1"), "\(trace.diagnosis)")
            #expect(trace.events.contains { $0.stage == .inferenceStarted } && trace.events.last?.stage == .resultCommitted,
                    "\(trace.events.map(\.stage))")
            let json = String(decoding: try LeveeJSON.encode(trace), as: UTF8.self)
            #expect(json.contains("\"state\":\"cancelled\"") && json.contains("\"class\":\"cancelled\""), "\(json)")
        }
    }

    @Test(.timeLimit(.minutes(2))) func resubmittingAnIdempotencyKeyGivesOneResult() async throws {
        let h = try PipelineHarness(partitions: 2)
        let worker = Worker(connection: h.connection, configuration: h.workerConfiguration("w-1"), engine: ScriptedEngine())
        try await Self.withWorkers(h, [worker]) { client, collector in
            func job() -> JobEnvelope {
                JobClient.makeJob(tenant: "acme", kind: .textGenerate, model: "test-model", input: JobInput(prompt: "hello"),
                                  params: JobParameters(maxTokens: 4), idempotencyKey: "order-42")
            }
            let first = try await client.submit(job())
            let second = try await client.submit(job())
            #expect(first.jobID == second.jobID)
            #expect(await collector.waitFor([first.jobID], timeout: .seconds(30)).isEmpty)
            // Once more after the result exists.
            _ = try await client.submit(job())
            try await Task.sleep(for: .seconds(1))
            #expect(collector.snapshot.duplicates.isEmpty, "\(collector.snapshot.duplicates)")
            let found = try await client.result(for: first.jobID)
            #expect(found?.status == .succeeded)
            // A UUIDv5 id carries no time: the trace reader takes the submit time from the job record.
            #expect(first.jobID.embeddedTime == nil)
            let submitted = try await TraceReader.submitTime(h.connection, jobID: first.jobID, timeout: .seconds(10))
            #expect(submitted == first.submittedAt)
            let trace = try #require(try await TraceReader.trace(h.connection, jobID: first.jobID))
            #expect(trace.state == "succeeded" && trace.events.contains { $0.stage == .resultCommitted }, "\(trace.diagnosis)")
        }
        #expect(worker.statistics.duplicatesSkipped == 2)
        #expect(worker.statistics.succeeded == 1)
    }

    @Test(.timeLimit(.minutes(3))) func aKilledWorkersJobsFinishElsewhere() async throws {
        let h = try PipelineHarness(partitions: 4)
        let engine = ScriptedEngine(tokenDelay: .milliseconds(20), tokens: 5)
        let victim = Worker(connection: h.connection, configuration: h.workerConfiguration("w-victim", concurrency: 2), engine: engine)
        let survivor = Worker(connection: h.connection, configuration: h.workerConfiguration("w-survivor", concurrency: 2), engine: engine)
        let client = try JobClient(connection: h.connection)
        let collector = try await ResultCollector(connection: h.connection)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await collector.run() }
            group.addTask { try await survivor.run() }
            // The victim runs in a task of its own so it can be killed: cancelled, it commits nothing more.
            let victimTask = Task { try await victim.run() }
            // Both in the group with partitions of their own before the burst (a rebalance on the
            // mock takes seconds; the survivor alone could finish everything first).
            for _ in 0..<600 where !(victim.isReady && survivor.isReady) { try await Task.sleep(for: .milliseconds(50)) }
            var ids: Set<JobID> = []
            for i in 0..<60 { ids.insert(try await client.submit(h.chatJob("job \(i)")).jobID) }
            // Kill the victim once it has taken work.
            for _ in 0..<3000 where victim.statistics.received == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(victim.statistics.received > 0)
            victimTask.cancel()
            _ = await victimTask.result
            let missing = await collector.waitFor(ids, timeout: .seconds(90))
            #expect(missing.isEmpty, "lost: \(missing.count)")
            #expect(ids.allSatisfy { collector.snapshot.results[$0] != nil })
            survivor.shutdown()
            try await group.next()
            await collector.close()
            group.cancelAll()
        }
        try await client.close()
        #expect(survivor.statistics.succeeded > 0)
    }
}
