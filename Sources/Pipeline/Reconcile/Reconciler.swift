import Foundation
import Kafka
import Synchronization

/// Audits the invariant "every accepted job ends with exactly one terminal record" and repairs
/// what it can: lost jobs are re-enqueued with the same job id and attempt+1 (with a `requeued`
/// trace event), inside one transaction; duplicates, orphans and stuck jobs are reported.
///
/// Each pass reads the group's committed offsets first, then every Levee topic to its end (the
/// first pass from the beginning, later passes only what is new), then judges the jobs still
/// open. Finished, audited jobs (one terminal record, outcome traced) are kept as a few bytes
/// each and judged again only if a later record concerns them (a duplicate, a tombstone), so a
/// pass costs what is new rather than everything known. All state comes from the topics, so a
/// restarted reconciler reaches the same answers.
public final class Reconciler: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// The worker group whose committed offsets say what was consumed.
        public var group: String
        /// A job without a terminal record and without a live owner this long after its last sign
        /// of life is lost.
        public var sla: Duration = .seconds(120)
        /// A job held by a live worker this long is stuck.
        public var stuckAfter: Duration = .seconds(600)
        /// Report only; never re-enqueue.
        public var dryRun = false
        /// The longest a pass may take to read the topics to their ends.
        public var readTimeout: Duration = .seconds(120)
        /// Keep finished, audited jobs only as a few bytes each (and judge only open jobs each
        /// pass). Off only to measure what it saves (`levee bench reconcile`).
        public var compactSettled = true
        /// A settled job is forgotten this long after its outcome: the jobs topic's retention
        /// (7 days), after which no record can requeue or duplicate it.
        public var forgetSettledAfter: Duration = .seconds(7 * 24 * 3600)
        public var identity = WorkerIdentity(id: "reconciler", host: ProcessInfo.processInfo.hostName,
                                             pid: ProcessInfo.processInfo.processIdentifier)

        public init(group: String) { self.group = group }
    }

    /// While reading, finished jobs are compacted every this many records, so even the first
    /// pass over a long history holds only the jobs still open in full.
    public static let compactEvery = 200_000

    public let connection: KafkaConnection
    public let configuration: Configuration
    public let metrics = ReconcilerMetrics()
    private var state = ReconcilerState()
    private var lastForget: ContinuousClock.Instant?
    private let drain: TopicDrain
    private var producer: TransactionalProducer?
    private let passLock = Mutex(false)
    private let lastReport = Mutex<ReconcileReport?>(nil)

    public init(connection: KafkaConnection, configuration: Configuration) {
        self.connection = connection
        self.configuration = configuration
        let layout = connection.layout
        drain = TopicDrain(connection: connection,
                           topics: [layout.jobs, layout.retry, layout.results, layout.trace, layout.deadLetters])
    }

    /// The isolation level results are read with (`-X isolation.level=read_uncommitted` counts raw records).
    public var isolation: String { connection.properties["isolation.level"] ?? "read_committed" }

    /// The newest report, for `/readyz` and the service loop.
    public var latest: ReconcileReport? { lastReport.withLock { $0 } }

    /// One pass: read, judge, repair (unless a dry run). Not reentrant.
    public func pass(now: @Sendable () -> Timestamp = { .now() }) async throws -> ReconcileReport {
        guard passLock.withLock({ busy in defer { busy = true }; return !busy }) else {
            throw ReconcileError("a pass is already running")
        }
        defer { passLock.withLock { $0 = false } }
        let started = ContinuousClock.now
        // Ages (liveness, SLA) are judged as of the start of the pass: heartbeats are read first,
        // and a slow read must not make a live worker look dead.
        let passTime = now()
        let layout = connection.layout
        let t0 = ContinuousClock.now
        func lap(_ what: String) { if ProcessInfo.processInfo.environment["LEVEE_DEBUG_TIMING"] != nil { FileHandle.standardError.write(Data("\(what) \(ContinuousClock.now - t0)\n".utf8)) } }

        let heartbeats = try await TraceReader.latestHeartbeats(connection)
        lap("heartbeats")
        let committed = try await committedOffsets()
        lap("committed")
        // One consumer reads every topic to its end (one fetch wait for all of them).
        var read: [String: Int] = ["jobs": 0, "results": 0, "trace": 0, "dlq": 0]
        var sinceCompact = 0
        let compactSettled = configuration.compactSettled
        try await drain.read(timeout: configuration.readTimeout) { message in
            sinceCompact += 1
            if compactSettled && sinceCompact >= Self.compactEvery {
                sinceCompact = 0
                state.compact()
            }
            switch message.topic {
            case layout.jobs, layout.retry:
                read["jobs", default: 0] += 1
                state.applyJobRecord(message, retry: message.topic == layout.retry)
            case layout.results:
                read["results", default: 0] += 1
                state.applyResult(message)
            case layout.trace:
                read["trace", default: 0] += 1
                state.applyTrace(message)
            default:
                read["dlq", default: 0] += 1
                state.applyDeadLetter(message)
            }
        }
        lap("topics")
        read["workers"] = heartbeats.count
        for (k, v) in read { state.recordsRead[k, default: 0] += v }

        var judgement = state.classify(
            now: passTime, committed: committed, heartbeats: heartbeats, slaMs: configuration.sla.wholeMilliseconds,
            stuckAfterMs: configuration.stuckAfter.wholeMilliseconds, group: configuration.group, isolation: isolation,
            retryTopic: layout.retry)
        judgement.report.recordsRead = read
        if configuration.compactSettled {
            // Forgetting walks every settled job: do it now and then, not every pass.
            let forget = lastForget.map { ContinuousClock.now - $0 > .seconds(600) } ?? true
            if forget { lastForget = .now }
            state.compact(forgetBefore: forget ? passTime.adding(milliseconds: -configuration.forgetSettledAfter.wholeMilliseconds) : nil)
        }
        if !configuration.dryRun, !judgement.repairable.isEmpty {
            let requeued = try await requeue(judgement.repairable)
            for i in judgement.report.lost.indices where requeued[judgement.report.lost[i].jobID] != nil {
                judgement.report.lost[i].requeued = true
            }
            judgement.report.requeued = requeued.map { .init(jobID: $0.key, attempt: $0.value) }.sorted { $0.jobID < $1.jobID }
        }
        let report = judgement.report
        metrics.record(report, seconds: (ContinuousClock.now - started).seconds)
        lastReport.withLock { $0 = report }
        return report
    }

    public func close() async {
        await producer?.close()
        producer = nil
    }

    /// The worker group's committed offsets on the jobs and retry topics.
    func committedOffsets() async throws -> [TopicPartition: Int64] {
        let layout = connection.layout
        let admin = try KafkaAdmin(configuration: connection.configuration())
        var partitions: [TopicPartition] = []
        for topic in [layout.jobs, layout.retry] {
            let count: Int
            do { count = try await admin.describeTopic(topic).partitionCount } catch {
                throw TopicDrain.MissingTopic(topic: topic)
            }
            partitions += (0..<count).map { TopicPartition(topic, Int32($0)) }
        }
        let consumer = try KafkaConsumer(configuration: connection.configuration(["group.id": configuration.group]), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        var out: [TopicPartition: Int64] = [:]
        for entry in try await consumer.committed(partitions) where entry.offset >= 0 {
            out[entry.topicPartition] = entry.offset
        }
        return out
    }

    /// Re-enqueues lost jobs: a copy of each job's newest record with attempt+1 goes to the jobs
    /// topic with a `requeued` trace event, all in one transaction. A worker skips the copy if a
    /// terminal record appears meanwhile, so this never makes a second terminal record.
    func requeue(_ jobs: [(JobID, ReconcilerState.RecordRef, String)]) async throws -> [JobID: Int] {
        let layout = connection.layout
        var copies: [(JobEnvelope, String)] = []
        for (id, ref, reason) in jobs {
            let records = try await KafkaConsumer.readWindow(
                configuration: connection.configuration(), partition: TopicPartition(ref.topic, ref.partition),
                from: ref.offset, maxMessages: 1)
            guard let message = records.first, message.offset == ref.offset, let value = message.value,
                  var job = try? LeveeJSON.decode(JobEnvelope.self, from: Data(value)), job.jobID == id else { continue }
            job.attempt = ref.attempt + 1
            job.notBefore = nil
            job.lastError = JobError(.other, "requeued by the reconciler: \(reason)", retriable: true)
            copies.append((job, reason))
        }
        guard !copies.isEmpty else { return [:] }
        let producer = try await transactionalProducer()
        var done: [JobID: Int] = [:]
        do {
            try producer.beginTransaction()
            for (job, reason) in copies {
                let key = Array(job.jobID.description.utf8)
                let report = try await producer.send(ProducerRecord(
                    topic: layout.jobs, key: key, value: Array(try LeveeJSON.encode(job)),
                    headers: [KafkaHeader("traceparent", job.traceparent.description)]))
                let event = TraceEvent(jobID: job.jobID, stage: .requeued, attempt: job.attempt, traceparent: job.traceparent,
                                       worker: configuration.identity, topic: report.topic, partition: report.partition,
                                       offset: report.offset, detail: "requeued by the reconciler: \(reason)")
                try await producer.sendAndForget(ProducerRecord(topic: layout.trace, key: key, value: Array(try LeveeJSON.encode(event))))
                done[job.jobID] = job.attempt
            }
            try await producer.commitTransaction()
        } catch {
            try? await producer.abortTransaction()
            await producer.close()
            self.producer = nil
            throw error
        }
        return done
    }

    private func transactionalProducer() async throws -> TransactionalProducer {
        if let producer { return producer }
        let made = try TransactionalProducer(configuration: connection.configuration([
            // One reconciler per group repairs at a time: a second instance fences the first.
            "transactional.id": "levee-reconciler-\(configuration.group)",
            "transaction.timeout.ms": "30000",
        ]))
        try await made.initTransactions()
        producer = made
        return made
    }
}

public struct ReconcileError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    var wholeMilliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }

    var seconds: Double { milliseconds / 1000 }
}

/// The reconciler's Prometheus series (served on `levee reconcile --http`).
public final class ReconcilerMetrics: Sendable {
    public let registry = MetricsRegistry()
    let passes: Counter
    let failures: Counter
    let requeued: Counter
    let lost: Gauge
    let stuck: Gauge
    let duplicates: Gauge
    let orphans: Gauge
    let pending: Gauge
    let stalledPartitions: Gauge
    let terminal: Gauge
    let dlq: Gauge
    let consistent: Gauge
    let lastPass: Gauge
    let passSeconds: Histogram

    init() {
        passes = registry.counter("levee_reconciler_passes_total", help: "Reconciler passes completed.")
        failures = registry.counter("levee_reconciler_pass_failures_total", help: "Reconciler passes that could not finish.")
        requeued = registry.counter("levee_reconciler_requeued_total", help: "Lost jobs re-enqueued by the reconciler.")
        lost = registry.gauge("levee_reconciler_lost_jobs", help: "Jobs found lost in the last pass.")
        stuck = registry.gauge("levee_reconciler_stuck_jobs", help: "Jobs held by a live worker past the stuck threshold in the last pass.")
        duplicates = registry.gauge("levee_reconciler_duplicate_jobs", help: "Jobs with more than one terminal record in the last pass.")
        orphans = registry.gauge("levee_reconciler_orphan_results", help: "Terminal records of jobs never accepted in the last pass.")
        pending = registry.gauge("levee_reconciler_pending_jobs", help: "Jobs without a terminal record, by state (stalled: queued past the SLA behind a live owner that receives nothing).", labelNames: ["state"])
        stalledPartitions = registry.gauge("levee_reconciler_stalled_partitions",
                                           help: "Partitions whose queued jobs wait past the SLA behind a live owner that has received nothing from them for the SLA (lag not moving).")
        terminal = registry.gauge("levee_reconciler_terminal_jobs", help: "Jobs with a terminal record, by status.", labelNames: ["status"])
        dlq = registry.gauge("levee_reconciler_dlq_records", help: "Dead-letter records, by reason.", labelNames: ["reason"])
        consistent = registry.gauge("levee_reconciler_consistent", help: "1 when the last pass found nothing wrong, else 0.")
        lastPass = registry.gauge("levee_reconciler_last_pass_timestamp_seconds", help: "When the last pass finished (Unix time).")
        passSeconds = registry.histogram("levee_reconciler_pass_seconds", help: "Time one pass took.",
                                         buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120])
    }

    func record(_ report: ReconcileReport, seconds: Double) {
        passes.increment()
        requeued.increment(by: Double(report.requeued.count))
        lost.set(Double(report.lost.count))
        stuck.set(Double(report.stuck.count))
        duplicates.set(Double(report.duplicates.count))
        orphans.set(Double(report.orphans.count))
        pending.labels("queued").set(Double(report.pending.queued))
        pending.labels("running").set(Double(report.pending.running))
        pending.labels("waiting_retry").set(Double(report.pending.waitingRetry))
        pending.labels("late").set(Double(report.pending.late))
        pending.labels("stalled").set(Double(report.pending.stalled))
        stalledPartitions.set(Double(report.stalled.count))
        for status in JobStatus.allCases { terminal.labels(status.rawValue).set(Double(report.terminal[status.rawValue] ?? 0)) }
        for (reason, count) in report.dlq.byReason { dlq.labels(reason).set(Double(count)) }
        consistent.set(report.consistent ? 1 : 0)
        lastPass.set(Double(report.at.millisecondsSinceEpoch) / 1000)
        passSeconds.observe(seconds)
    }

    public func recordFailedPass() { failures.increment() }
}
