import Foundation
import Kafka
import Testing
@testable import Pipeline

/// `levee status` (StatusReader) on the embedded cluster with real workers and planted heartbeats;
/// topic configs (compaction) on noida-db, the embedded mock has none.
@Suite(.serialized) struct StatusTests {
    /// Polls `read` until `done` holds or `timeout` passes; returns the last report.
    static func poll(_ timeout: Duration, _ read: () async -> StatusReport, until done: (StatusReport) -> Bool) async -> StatusReport {
        let deadline = ContinuousClock.now + timeout
        var report = await read()
        while !done(report) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(300))
            report = await read()
        }
        return report
    }

    /// Options for the embedded mock, which never answers DescribeConfigs: give up on it quickly.
    static func fast(_ group: String, stuckAfter: Duration? = nil) -> StatusReader.Options {
        var o = StatusReader.Options(group: group, stuckAfter: stuckAfter)
        o.configTimeout = .milliseconds(300)
        return o
    }

    static func plant(_ h: PipelineHarness, _ beats: [WorkerHeartbeat]) async throws {
        let producer = try KafkaProducer(configuration: h.connection.configuration())
        for beat in beats {
            _ = try await producer.send(ProducerRecord(topic: h.connection.layout.workers, key: Array(beat.worker.id.utf8),
                                                       value: Array(try LeveeJSON.encode(beat))))
        }
        try await producer.close()
    }

    static func beat(_ id: String, at: Timestamp, state: WorkerState = .running, assigned: [TopicPartitionRef] = [],
                     running: [RunningJobRef]? = nil, jobTimeoutMs: Int64? = nil) -> WorkerHeartbeat {
        WorkerHeartbeat(worker: WorkerIdentity(id: id, host: "host-\(id)", pid: 4242), state: state, at: at,
                        startedAt: at.adding(milliseconds: -60_000), heartbeatIntervalMs: 500, version: "0.1.0", engine: "synthetic",
                        model: "m", concurrency: 2, assigned: assigned, currentJobs: (running ?? []).map(\.jobID), jobsDone: 7,
                        jobsFailed: 1, errors: 2, running: running, jobTimeoutMs: jobTimeoutMs)
    }

    @Test(.timeLimit(.minutes(4))) func aliveWorkerReportsItsPartitionsAndRunningJobsThenStopsCleanly() async throws {
        let h = try PipelineHarness(partitions: 2)
        var config = h.workerConfiguration("w-alive")
        config.jobTimeout = .seconds(42)
        let engine = ScriptedEngine(tokenDelay: .milliseconds(800), tokens: 8)
        let worker = Worker(connection: h.connection, configuration: config, engine: engine)
        let group = config.groupID
        let read = { await StatusReader.read(connection: h.connection, group: group, options: Self.fast(group)) }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await worker.run() }
            let joined = await Self.poll(.seconds(90), read) { r in
                r.workers.first { $0.id == "w-alive" }.map { $0.status == .alive && $0.assigned.count == 4 } ?? false
            }
            let w = try #require(joined.workers.first { $0.id == "w-alive" }, "\(joined.summary)")
            #expect(w.status == .alive && !w.host.isEmpty && w.pid == ProcessInfo.processInfo.processIdentifier)
            #expect(Set(w.assigned) == Set([h.connection.layout.jobs, h.connection.layout.retry].flatMap { t in
                (0..<2).map { TopicPartitionRef(topic: t, partition: Int32($0)) } }))
            #expect(w.jobTimeoutMs == 42_000)
            #expect(joined.verdict == .healthy, "\(joined.issues)")
            #expect(joined.summary == "healthy: 1 broker, 1 worker alive, lag 0")
            #expect(joined.brokers.reachable && joined.brokers.list.count == 1)
            #expect(joined.topics.count == 7 && joined.topics.allSatisfy { $0.exists && $0.partitions == $0.expectedPartitions })

            // A job on the engine shows in the heartbeat's running list, with its attempt.
            let client = try JobClient(connection: h.connection)
            let receipt = try await client.submit(h.chatJob("slow"))
            let running = await Self.poll(.seconds(60), read) { r in
                r.workers.first { $0.id == "w-alive" }?.running?.contains { $0.jobID == receipt.jobID } ?? false
            }
            let ref = try #require(running.workers.first { $0.id == "w-alive" }?.running?.first { $0.jobID == receipt.jobID },
                                   "the running job never showed in a heartbeat")
            #expect(ref.attempt == 1 && ref.stage == .inferenceStarted)
            #expect(running.workers.first { $0.id == "w-alive" }?.currentJobs.contains(receipt.jobID) == true)
            #expect(running.stuck.isEmpty, "not over its 42 s timeout")
            // The same heartbeat read with a 0.1 s stuck limit: the job is stuck.
            let strict = await StatusReader.read(connection: h.connection, group: group,
                                                 options: Self.fast(group, stuckAfter: .milliseconds(100)))
            if strict.workers.first(where: { $0.id == "w-alive" })?.running?.contains(where: { $0.jobID == receipt.jobID }) == true {
                #expect(strict.stuck.contains { $0.jobID == receipt.jobID && $0.worker == "w-alive" && $0.limitMs == 100 })
            }
            try await client.close()

            worker.shutdown()
            try await tasks.next()
            let stopped = await read()
            let s = try #require(stopped.workers.first { $0.id == "w-alive" })
            #expect(s.status == .stopped && s.reportedState == .stopped)
            #expect(!stopped.issues.contains { $0.kind == "dead_worker" }, "a clean stop is not a death")
        }
    }

    @Test(.timeLimit(.minutes(1))) func deadWorkerIsNamedWithThePartitionsAndJobsItHeld() async throws {
        let h = try PipelineHarness(partitions: 2)
        let layout = h.connection.layout
        let now = Timestamp.now()
        let job = JobID.make()
        let held = [TopicPartitionRef(topic: layout.jobs, partition: 0), TopicPartitionRef(topic: layout.jobs, partition: 1),
                    TopicPartitionRef(topic: layout.retry, partition: 1)]
        try await Self.plant(h, [
            // An earlier, alive-looking heartbeat of the dead worker: the newest one must win.
            Self.beat("w-dead", at: now.adding(milliseconds: -20_000), assigned: []),
            Self.beat("w-dead", at: now.adding(milliseconds: -10_000), assigned: held,
                      running: [RunningJobRef(jobID: job, attempt: 2, since: now.adding(milliseconds: -11_000))], jobTimeoutMs: 300_000),
            Self.beat("w-live", at: now.adding(milliseconds: -200), assigned: [TopicPartitionRef(topic: layout.jobs, partition: 1)]),
            Self.beat("w-left", at: now.adding(milliseconds: -60_000), state: .stopped),
            Self.beat("w-ancient", at: now.adding(milliseconds: -3 * 24 * 3600 * 1000), assigned: held),
        ])
        let report = await StatusReader.read(connection: h.connection, group: layout.prefix + "workers", now: now,
                                             options: Self.fast(layout.prefix + "workers"))
        let byID = Dictionary(uniqueKeysWithValues: report.workers.map { ($0.id, $0) })
        #expect(byID["w-dead"]?.status == .dead)
        #expect(byID["w-live"]?.status == .alive)
        #expect(byID["w-left"]?.status == .stopped)
        #expect(byID["w-ancient"]?.status == .gone)
        let dead = try #require(byID["w-dead"])
        #expect(dead.assigned == held.sorted() && dead.currentJobs == [job] && dead.host == "host-w-dead")
        #expect(dead.lastSeenAgoMs == 10_000)
        #expect(dead.takenOverBy == ["w-live"])
        #expect(report.stuck.isEmpty, "a dead worker's jobs are named with it, not as stuck")
        #expect(report.verdict == .attention)
        let issue = try #require(report.issues.first { $0.kind == "dead_worker" })
        #expect(report.issues.filter { $0.kind == "dead_worker" }.count == 1, "stopped and long-gone workers are no issue")
        #expect(issue.summary == "worker w-dead dead (held \(layout.jobs)[0,1] \(layout.retry)[1])")
        #expect(issue.detail.contains(job.description) && issue.detail.contains("host-w-dead") && issue.detail.contains("now held by w-live"))
        #expect(report.summary.hasPrefix("ATTENTION: worker w-dead dead (held \(layout.jobs)[0,1]"), "\(report.summary)")
    }

    @Test(.timeLimit(.minutes(1))) func stuckJobFromAPlantedHeartbeat() async throws {
        let h = try PipelineHarness(partitions: 1)
        let now = Timestamp.now()
        let stuckID = JobID.make(), freshID = JobID.make()
        try await Self.plant(h, [Self.beat("w-busy", at: now.adding(milliseconds: -100), running: [
            RunningJobRef(jobID: stuckID, attempt: 1, since: now.adding(milliseconds: -20_000)),
            RunningJobRef(jobID: freshID, attempt: 3, since: now.adding(milliseconds: -1_000)),
        ], jobTimeoutMs: 5_000)])
        let group = h.connection.layout.prefix + "workers"
        let report = await StatusReader.read(connection: h.connection, group: group, now: now, options: Self.fast(group))
        #expect(report.stuck == [StatusReport.StuckJob(jobID: stuckID, worker: "w-busy", host: "host-w-busy", attempt: 1, stage: .inferenceStarted,
                                                       since: now.adding(milliseconds: -20_000), runningMs: 20_000, limitMs: 5_000)])
        #expect(report.issues.map(\.kind) == ["stuck_job"])
        #expect(report.summary == "ATTENTION: job \(stuckID) stuck on w-busy")
        // --stuck-after overrides the worker's own timeout, both ways.
        let lenient = await StatusReader.read(connection: h.connection, group: group, now: now,
                                              options: Self.fast(group, stuckAfter: .seconds(60)))
        #expect(lenient.stuck.isEmpty && lenient.verdict == .healthy)
        let strict = await StatusReader.read(connection: h.connection, group: group, now: now,
                                             options: Self.fast(group, stuckAfter: .milliseconds(500)))
        #expect(Set(strict.stuck.map(\.jobID)) == [stuckID, freshID])
        // A heartbeat from a worker that does not report running jobs (older version) is never stuck.
        #expect(StatusReader.stuckJobs(StatusReader.classify(["old": Self.beat("old", at: now)], now: now), now: now, stuckAfter: .zero).isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func lagAndOldestUnfinishedJobWithNoWorkerRunning() async throws {
        let h = try PipelineHarness(partitions: 3)
        let client = try JobClient(connection: h.connection)
        var receipts: [SubmitReceipt] = []
        for i in 0..<7 {
            receipts.append(try await client.submit(h.chatJob("waiting \(i)")))
            try await Task.sleep(for: .milliseconds(3))
        }
        try await client.close()
        let group = h.connection.layout.prefix + "workers"
        let report = await StatusReader.read(connection: h.connection, group: group, options: Self.fast(group))
        #expect(report.lag.error == nil)
        #expect(report.lag.total == 7)
        #expect(report.lag.partitions.count == 6, "3 job + 3 retry partitions")
        for p in 0..<3 {
            let expected = Int64(receipts.filter { $0.partition == Int32(p) }.count)
            #expect(report.lag.partitions.first { $0.topic == h.connection.layout.jobs && $0.partition == Int32(p) }?.lag == expected)
        }
        let oldest = try #require(report.oldestUnfinished)
        #expect(oldest.jobID == receipts[0].jobID && oldest.offset == receipts[0].offset && oldest.partition == receipts[0].partition)
        #expect(oldest.hasResult == false && oldest.attempt == 1)
        #expect(report.workers.isEmpty)
        #expect(report.issues.map(\.kind) == ["no_live_worker"])
        #expect(report.summary == "ATTENTION: lag 7 and no live worker")
    }

    @Test(.timeLimit(.minutes(1))) func missingTopicsAndWrongPartitionCountsAreIssues() async throws {
        let cluster = try EmbeddedCluster()
        let layout = TopicLayout(prefix: "m\(UUID().uuidString.prefix(8).lowercased()).", partitions: 4)
        try cluster.createTopic(layout.jobs, partitions: 2)
        try cluster.createTopic(layout.workers, partitions: 1)
        let connection = KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: layout)
        let report = await StatusReader.read(connection: connection, options: Self.fast(layout.prefix + "levee-workers"))
        #expect(report.topics.first { $0.name == layout.jobs }.map { $0.exists && $0.partitions == 2 && $0.expectedPartitions == 4 } == true)
        let kinds = report.issues.map(\.kind)
        #expect(kinds.filter { $0 == "topic_missing" }.count == 5, "\(kinds)")
        #expect(kinds.filter { $0 == "partitions" }.count == 1, "\(kinds)")
        #expect(report.issues.first { $0.kind == "topic_missing" }?.detail.contains("levee topics create") == true)
        #expect(report.summary.contains("\(layout.jobs) has 2 partitions, expected 4") && report.summary.contains("topic \(layout.results) missing"))
        #expect(report.lag.partitions.count == 2, "lag of the job partitions that exist")
    }

    @Test(.timeLimit(.minutes(1))) func unreachableBrokersAreSaidSo() async throws {
        let connection = KafkaConnection(bootstrapServers: "127.0.0.1:1", layout: TopicLayout(prefix: "x."))
        var options = StatusReader.Options()
        options.timeout = .seconds(2)
        let report = await StatusReader.read(connection: connection, options: options)
        #expect(report.verdict == .unreachable && !report.brokers.reachable && report.brokers.error != nil)
        #expect(report.summary.hasPrefix("UNREACHABLE") && report.issues.map(\.kind) == ["brokers_unreachable"])
        #expect(report.group == "x.levee-workers", "the default group is levee worker's")
    }

    @Test func heartbeatsWithoutTheNewFieldsStillDecode() throws {
        let old = #"{"schema":"levee.worker/v1","worker":{"id":"w","host":"h","pid":1},"state":"running","at":"2026-11-22T04:21:00.000Z","started_at":"2026-11-22T04:00:00.000Z","heartbeat_interval_ms":2000,"version":"0.1.0","engine":"synthetic","model":"m","concurrency":1,"assigned":[],"current_jobs":[],"jobs_done":0,"jobs_failed":0,"errors":0}"#
        let beat = try LeveeJSON.decode(WorkerHeartbeat.self, from: Data(old.utf8))
        #expect(beat.running == nil && beat.jobTimeoutMs == nil)
        let example = try LeveeJSON.decode(WorkerHeartbeat.self, from: try SchemaTests.example("worker-heartbeat.json"))
        #expect(example.running?.first?.stage == .inferenceStarted && example.jobTimeoutMs == 300_000)
        let (status, output) = try SchemaTests.schemaCheck("worker-heartbeat", [try LeveeJSON.encode(Self.beat("w", at: .now(),
            running: [RunningJobRef(jobID: JobID.make(), attempt: 1, since: .now())], jobTimeoutMs: 1000))])
        #expect(status == 0, "\(output)")
    }

    /// On noida-db (real topic configs): a results topic created without compaction is flagged
    /// with the command that fixes it; the correctly created topics are not.
    @Test(.timeLimit(.minutes(2))) func resultsTopicWithoutCompactionIsFlaggedOnNoida() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped resultsTopicWithoutCompactionIsFlaggedOnNoida: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test sets it; or start one with scripts/noida)")
            return
        }
        let layout = TopicLayout(prefix: "s\(UUID().uuidString.prefix(8).lowercased()).", partitions: 2)
        let connection = KafkaConnection(bootstrapServers: bootstrap, layout: layout)
        let admin = try KafkaAdmin(configuration: connection.configuration())
        try await admin.createTopics([NewTopic(name: layout.results, partitions: 2, replicationFactor: 1, configs: ["cleanup.policy": "delete"])])
        _ = try await TopicProvisioner.ensureTopics(connection)
        let report = await StatusReader.read(connection: connection)
        let results = try #require(report.topics.first { $0.name == layout.results })
        #expect(results.cleanupPolicy == "delete" && results.expectedCleanupPolicy == "compact")
        #expect(results.warnings.count == 1)
        #expect(results.warnings.first?.contains("kafka-configs --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name \(layout.results) --add-config cleanup.policy=compact") == true)
        #expect(results.warnings.first?.contains("without compaction, retention deletes its records, so old jobs lose their terminal record") == true,
                "\(results.warnings)")
        #expect(report.topics.first { $0.name == layout.workers }?.cleanupPolicy == "compact")
        let jobsRetention: Int64? = report.topics.first(where: { $0.name == layout.jobs })?.retentionMs
        #expect(jobsRetention == Int64(7 * 24 * 3600 * 1000))
        #expect(report.issues.map(\.kind) == ["not_compacted"])
        #expect(report.summary == "ATTENTION: \(layout.results) not compacted")
    }
}
