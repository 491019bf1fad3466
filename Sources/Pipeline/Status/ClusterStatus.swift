import Foundation
import Kafka
import Synchronization

/// What `levee status` reports: brokers, Levee's topics and their configs, the worker group's
/// lag, workers alive or dead (from their heartbeats), the oldest unfinished job and stuck jobs,
/// with the issues that need an operator and a one-line verdict. Schema `levee.status/v1`.
public struct StatusReport: Codable, Sendable, Equatable {
    public static let schemaID = "levee.status/v1"

    public var schema = Self.schemaID
    public var at: Timestamp
    /// `healthy`, `attention` (something needs an operator) or `unreachable` (no broker answered).
    public var verdict: Verdict
    /// One line: `healthy: 3 brokers, 2 workers alive, lag 0` or `ATTENTION: …`.
    public var summary: String
    public var issues: [Issue]
    public var group: String
    public var brokers: Brokers
    public var topics: [Topic]
    public var lag: Lag
    public var workers: [Worker]
    public var oldestUnfinished: UnfinishedJob?
    public var stuck: [StuckJob]
    /// Partitions queued past the limit behind a live owner that does not move them.
    public var stalled: [StalledPartition] = []

    public enum Verdict: String, Codable, Sendable { case healthy, attention, unreachable }

    /// Something that needs an operator: a short phrase for the verdict line and the whole story
    /// with what to do.
    public struct Issue: Codable, Sendable, Equatable {
        /// `brokers_unreachable`, `topic_missing`, `topic_unusable`, `partitions`, `no_leader`, `not_compacted`,
        /// `dead_worker`, `stuck_job`, `no_live_worker`.
        public var kind: String
        public var summary: String
        public var detail: String
    }

    public struct Brokers: Codable, Sendable, Equatable {
        public var bootstrap: String
        public var reachable: Bool
        public var error: String?
        public var list: [Broker]
        /// The broker that answered the metadata request.
        public var answeredBy: Int32?

        enum CodingKeys: String, CodingKey { case bootstrap, reachable, error, list, answeredBy = "answered_by" }
    }

    public struct Broker: Codable, Sendable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int
    }

    /// One of Levee's topics as the cluster has it, against the layout.
    public struct Topic: Codable, Sendable, Equatable {
        public var name: String
        public var purpose: String
        public var exists: Bool
        public var partitions: Int?
        public var expectedPartitions: Int
        public var leaderless: [Int32]
        /// From DescribeConfigs; nil when the topic is missing or the broker did not answer.
        public var cleanupPolicy: String?
        public var retentionMs: Int64?
        public var expectedCleanupPolicy: String?
        /// Why the configs are unknown, when they are.
        public var configError: String?
        public var warnings: [String]

        enum CodingKeys: String, CodingKey {
            case name, purpose, exists, partitions, expectedPartitions = "expected_partitions", leaderless
            case cleanupPolicy = "cleanup_policy", retentionMs = "retention_ms", expectedCleanupPolicy = "expected_cleanup_policy"
            case configError = "config_error", warnings
        }
    }

    /// The worker group's lag on the job and retry topics.
    public struct Lag: Codable, Sendable, Equatable {
        public var total: Int64
        public var partitions: [PartitionLag]
        /// Why lag could not be read, when it could not.
        public var error: String?
    }

    public struct PartitionLag: Codable, Sendable, Equatable {
        public var topic: String
        public var partition: Int32
        /// The group's committed offset, nil when it has committed nothing there.
        public var committed: Int64?
        public var low: Int64
        public var high: Int64
        public var lag: Int64
    }

    /// Whether a worker is alive, from its newest heartbeat.
    public enum Liveness: String, Codable, Sendable {
        /// Heartbeats arrive (the last one is younger than 3 intervals).
        case alive
        /// No heartbeat for 3 intervals and no clean stop: the process or its host died.
        case dead
        /// Its last heartbeat says it left cleanly.
        case stopped
        /// Dead for longer than the forget window: listed, no longer an issue.
        case gone
    }

    /// A worker as its newest heartbeat describes it.
    public struct Worker: Codable, Sendable, Equatable {
        public var id: String
        public var host: String
        public var pid: Int32
        public var status: Liveness
        /// The state the worker last reported (starting, running, draining, stopped).
        public var reportedState: WorkerState
        public var lastSeen: Timestamp
        public var lastSeenAgoMs: Int64
        public var heartbeatIntervalMs: Int64
        public var startedAt: Timestamp
        public var engine: String
        public var model: String
        public var version: String
        public var assigned: [TopicPartitionRef]
        public var currentJobs: [JobID]
        public var running: [RunningJobRef]?
        public var jobTimeoutMs: Int64?
        public var jobsDone: Int64
        public var jobsFailed: Int64
        public var errors: Int64
        /// For a dead worker: live workers that now hold some of the partitions it held.
        public var takenOverBy: [String]?
        /// While the worker's commits keep failing (from its heartbeat).
        public var commitFailure: CommitFailureRef?

        enum CodingKeys: String, CodingKey {
            case id, host, pid, status, reportedState = "reported_state", lastSeen = "last_seen", lastSeenAgoMs = "last_seen_ago_ms"
            case heartbeatIntervalMs = "heartbeat_interval_ms", startedAt = "started_at", engine, model, version, assigned
            case currentJobs = "current_jobs", running, jobTimeoutMs = "job_timeout_ms", jobsDone = "jobs_done"
            case jobsFailed = "jobs_failed", errors, takenOverBy = "taken_over_by", commitFailure = "commit_failure"
        }
    }

    /// The oldest record not yet passed by the group's committed offset on the job and retry topics.
    public struct UnfinishedJob: Codable, Sendable, Equatable {
        /// Nil when the record is not a readable job (it will be dead-lettered).
        public var jobID: JobID?
        public var key: String?
        public var topic: String
        public var partition: Int32
        public var offset: Int64
        public var attempt: Int?
        public var submittedAt: Timestamp?
        public var ageMs: Int64?
        public var notBefore: Timestamp?
        /// The job has a terminal result already: the committed offset is behind (offsets not
        /// committed, e.g. on the embedded mock cluster, which drops transactional offsets).
        public var hasResult: Bool

        enum CodingKeys: String, CodingKey {
            case jobID = "job_id", key, topic, partition, offset, attempt, submittedAt = "submitted_at", ageMs = "age_ms"
            case notBefore = "not_before", hasResult = "has_result"
        }
    }

    /// A job a live worker has run longer than its job timeout (or the `--stuck-after` limit).
    public struct StuckJob: Codable, Sendable, Equatable {
        public var jobID: JobID
        public var worker: String
        public var host: String
        public var attempt: Int
        public var stage: TraceStage
        public var since: Timestamp
        public var runningMs: Int64
        public var limitMs: Int64

        enum CodingKeys: String, CodingKey {
            case jobID = "job_id", worker, host, attempt, stage, since, runningMs = "running_ms", limitMs = "limit_ms"
        }
    }

    /// A lagging partition whose first unfinished record has waited past the limit while a live
    /// worker holds the partition, does not run that job, and the job has no result: the lag is
    /// not moving although the owner heartbeats.
    public struct StalledPartition: Codable, Sendable, Equatable {
        public var topic: String
        public var partition: Int32
        public var owner: String
        public var ownerLastSeen: Timestamp
        public var lag: Int64
        /// The group's committed offset (nil: nothing committed) and the record found there.
        public var committed: Int64?
        public var offset: Int64
        public var jobID: JobID?
        /// Since when the record could run: produced, or its retry's `not_before` if later.
        public var waitingSince: Timestamp
        public var waitingMs: Int64
        public var limitMs: Int64

        enum CodingKeys: String, CodingKey {
            case topic, partition, owner, ownerLastSeen = "owner_last_seen", lag, committed, offset, jobID = "job_id"
            case waitingSince = "waiting_since", waitingMs = "waiting_ms", limitMs = "limit_ms"
        }
    }

    enum CodingKeys: String, CodingKey {
        case schema, at, verdict, summary, issues, group, brokers, topics, lag, workers
        case oldestUnfinished = "oldest_unfinished", stuck, stalled
    }

    public var deadWorkers: [Worker] { workers.filter { $0.status == .dead } }
    public var aliveWorkers: [Worker] { workers.filter { $0.status == .alive } }
}

/// Reads the cluster's state for `levee status`. Every read is bounded: one metadata request,
/// one DescribeConfigs per topic, offsets and watermarks of the job and retry partitions, the
/// tail of the heartbeats topic, and one record per lagging partition.
public enum StatusReader {
    /// What `read` may be told besides the connection.
    public struct Options: Sendable {
        /// The worker group (default `<prefix>levee-workers`, as `levee worker`).
        public var group: String?
        /// A running job older than this is stuck (default: each worker's own job timeout).
        public var stuckAfter: Duration?
        /// A partition's first unfinished record waiting this long behind a live owner that does
        /// not run it marks the partition stalled (the reconciler's SLA, 120 s by default).
        public var stalledAfter: Duration = .seconds(120)
        /// A worker is dead after this many missed heartbeat intervals.
        public var missedHeartbeats: Int64 = 3
        /// A dead worker silent longer than this is listed as gone, no longer an issue.
        public var forgetAfter: Duration = .seconds(24 * 3600)
        /// The bound of each request to the cluster.
        public var timeout: Duration = .seconds(10)
        /// The bound of each DescribeConfigs request (brokers that cannot answer it, like the
        /// embedded mock, are asked once and take this long).
        public var configTimeout: Duration = .seconds(5)
        /// Heartbeat records read from the end of each partition of the workers topic.
        public var heartbeatTail: Int = 5000

        public init(group: String? = nil, stuckAfter: Duration? = nil) {
            self.group = group
            self.stuckAfter = stuckAfter
        }
    }

    /// The default worker group, the same as `levee worker`'s.
    public static func defaultGroup(_ layout: TopicLayout) -> String { layout.prefix + "levee-workers" }

    /// Reads everything `levee status` shows. Never throws for an unreachable cluster: the report
    /// says so (verdict `unreachable`).
    public static func read(connection: KafkaConnection, group: String? = nil, now: Timestamp = .now(),
                            options: Options = Options()) async -> StatusReport {
        let group = group ?? options.group ?? defaultGroup(connection.layout)
        var report = StatusReport(
            at: now, verdict: .healthy, summary: "", issues: [], group: group,
            brokers: .init(bootstrap: connection.bootstrapServers, reachable: false, error: nil, list: [], answeredBy: nil),
            topics: [], lag: .init(total: 0, partitions: [], error: nil), workers: [], oldestUnfinished: nil, stuck: [])
        let metadata: KafkaClusterMetadata
        do {
            let admin = try KafkaAdmin(configuration: connection.configuration())
            metadata = try await admin.metadata(timeout: options.timeout)
            report.brokers.reachable = true
            report.brokers.answeredBy = metadata.originatingBrokerID
            report.brokers.list = metadata.brokers.map { .init(id: $0.id, host: $0.host, port: $0.port) }.sorted { $0.id < $1.id }
            report.topics = await topics(admin, metadata: metadata, layout: connection.layout, timeout: options.configTimeout)
        } catch {
            report.brokers.error = "\(error)"
            report.issues = [.init(kind: "brokers_unreachable", summary: "brokers unreachable",
                                   detail: "no broker of \(connection.bootstrapServers) answered: \(error) (check --brokers, the network and -X security settings)")]
            report.verdict = .unreachable
            report.summary = "UNREACHABLE: no broker of \(connection.bootstrapServers) answered"
            return report
        }
        let layout = connection.layout
        let consumed = [layout.jobs, layout.retry].compactMap { name in metadata.topic(name).flatMap { $0.error == nil ? $0 : nil } }
        let partitions = consumed.flatMap { t in t.partitions.map { TopicPartition(t.name, $0.id) } }
        do {
            report.lag = try await lag(connection, group: group, partitions: partitions, timeout: options.timeout)
        } catch {
            report.lag.error = "\(error)"
        }
        var heartbeats: [String: WorkerHeartbeat] = [:]
        if metadata.topic(layout.workers).map({ $0.error == nil }) == true {
            heartbeats = (try? await latestHeartbeats(connection, tail: options.heartbeatTail)) ?? [:]
        }
        report.workers = classify(heartbeats, now: now, options: options)
        report.stuck = stuckJobs(report.workers, now: now, stuckAfter: options.stuckAfter)
        let heads = await headRecords(connection, lag: report.lag.partitions, timeout: options.timeout)
        report.oldestUnfinished = await oldestUnfinished(connection, heads: heads, now: now)
        var stalled: [StatusReport.StalledPartition] = []
        for candidate in stalledCandidates(heads: heads, lag: report.lag.partitions, workers: report.workers, now: now,
                                           limit: options.stalledAfter) {
            // A head record that has its result only shows the committed offset lagging (the
            // embedded mock drops transactional offsets), not a stalled partition.
            if let id = candidate.jobID, (try? await ResultLookup.result(connection, jobID: id)) ?? nil != nil { continue }
            stalled.append(candidate)
        }
        report.stalled = stalled
        report.issues = issues(report)
        report.verdict = report.issues.isEmpty ? .healthy : .attention
        report.summary = summary(report)
        return report
    }

    // MARK: - Topics

    static func topics(_ admin: KafkaAdmin, metadata: KafkaClusterMetadata, layout: TopicLayout,
                       timeout: Duration) async -> [StatusReport.Topic] {
        var result: [StatusReport.Topic] = []
        // A broker that does not answer DescribeConfigs (the embedded mock cluster) is asked once.
        var configsUnavailable: String?
        for spec in layout.specs {
            var topic = StatusReport.Topic(name: spec.name, purpose: spec.purpose, exists: false, partitions: nil,
                                           expectedPartitions: spec.partitions, leaderless: [], cleanupPolicy: nil, retentionMs: nil,
                                           expectedCleanupPolicy: spec.configs["cleanup.policy"], configError: nil, warnings: [])
            guard let found = metadata.topic(spec.name), found.error != "UNKNOWN_TOPIC_OR_PART" else {
                topic.warnings.append("topic \(spec.name) is missing: create Levee's topics with `levee topics create`")
                result.append(topic)
                continue
            }
            if let error = found.error, error != "LEADER_NOT_AVAILABLE" {
                topic.warnings.append("topic \(spec.name) is unusable: the cluster reports \(error) (missing ACLs? see the broker's log)")
                result.append(topic)
                continue
            }
            topic.exists = true
            topic.partitions = found.partitionCount
            topic.leaderless = found.partitions.filter { $0.leader < 0 || $0.error == "LEADER_NOT_AVAILABLE" }.map(\.id).sorted()
            if found.partitionCount != spec.partitions {
                topic.warnings.append("\(spec.name) has \(found.partitionCount) partitions, the layout wants \(spec.partitions) (give the right --partitions, or recreate the topic)")
            }
            if !topic.leaderless.isEmpty {
                topic.warnings.append("\(spec.name) partitions \(topic.leaderless.map(String.init).joined(separator: ",")) have no leader: a broker is down")
            }
            if let configsUnavailable {
                topic.configError = configsUnavailable
            } else {
                do {
                    let configs = try await admin.describeTopicConfig(spec.name, timeout: timeout)
                    topic.cleanupPolicy = configs["cleanup.policy"]?.value
                    topic.retentionMs = configs["retention.ms"]?.value.flatMap { Int64($0) }
                } catch {
                    topic.configError = "the broker did not describe the topic's configs: \(error)"
                    if let kafka = error as? KafkaError, kafka.kind != .unknownTopicOrPartition { configsUnavailable = topic.configError }
                }
            }
            if spec.configs["cleanup.policy"] == "compact", let policy = topic.cleanupPolicy,
               !policy.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == "compact" }) {
                // Say what is lost, in the topic's own terms.
                let loss: String
                switch spec.name {
                case layout.results:
                    loss = "so old jobs lose their terminal record (levee result, the reconciler and the workers' duplicate check no longer see that they finished)"
                case layout.workers:
                    loss = "so workers that stopped sending heartbeats drop out of levee status"
                case layout.control:
                    loss = "so old cancellations are forgotten"
                default:
                    loss = "so old \(spec.purpose) are lost"
                }
                topic.warnings.append(
                    "\(spec.name) is not compacted (cleanup.policy=\(policy)): without compaction, retention deletes its records, \(loss); "
                        + "fix: set cleanup.policy=compact, e.g. kafka-configs --bootstrap-server HOST:PORT --alter --entity-type topics --entity-name \(spec.name) --add-config cleanup.policy=compact")
            }
            result.append(topic)
        }
        return result
    }

    // MARK: - Lag

    static func lag(_ connection: KafkaConnection, group: String, partitions: [TopicPartition],
                    timeout: Duration) async throws -> StatusReport.Lag {
        guard !partitions.isEmpty else { return .init(total: 0, partitions: [], error: nil) }
        // A consumer with the group's id reads the group's committed offsets without joining it.
        let consumer = try KafkaConsumer(configuration: connection.configuration(["group.id": group]), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        let lags = try await consumer.lag(partitions, timeout: timeout)
        let rows = lags.map {
            StatusReport.PartitionLag(topic: $0.topic, partition: $0.partition, committed: $0.committed, low: $0.lowWatermark,
                                      high: $0.highWatermark, lag: $0.lag)
        }.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        return .init(total: rows.map(\.lag).reduce(0, +), partitions: rows, error: nil)
    }

    // MARK: - Workers

    /// The newest heartbeat per worker id, from the tail of each partition of the workers topic.
    static func latestHeartbeats(_ connection: KafkaConnection, tail: Int) async throws -> [String: WorkerHeartbeat] {
        let topic = connection.layout.workers
        let partitions = try await ResultLookup.partitionCount(connection, topic: topic)
        var latest: [String: WorkerHeartbeat] = [:]
        for p in 0..<partitions {
            let tp = TopicPartition(topic, Int32(p))
            let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
            let marks = try await consumer.watermarks(tp)
            await consumer.close()
            guard marks.high > marks.low else { continue }
            let records = try await KafkaConsumer.readWindow(configuration: connection.configuration(), partition: tp,
                                                             from: max(marks.low, marks.high - Int64(tail)), maxMessages: tail)
            for r in records {
                guard let v = r.value, let beat = try? LeveeJSON.decode(WorkerHeartbeat.self, from: Data(v)) else { continue }
                if let seen = latest[beat.worker.id], seen.at > beat.at { continue }
                latest[beat.worker.id] = beat
            }
        }
        return latest
    }

    /// Alive, dead, stopped or gone, from each worker's newest heartbeat.
    public static func classify(_ heartbeats: [String: WorkerHeartbeat], now: Timestamp,
                                options: Options = Options()) -> [StatusReport.Worker] {
        var workers = heartbeats.values.map { beat -> StatusReport.Worker in
            let age = max(0, beat.at.milliseconds(until: now))
            let status: StatusReport.Liveness
            if beat.state == .stopped {
                status = .stopped
            } else if age > options.missedHeartbeats * max(1, beat.heartbeatIntervalMs) {
                status = age > Int64(options.forgetAfter.milliseconds) ? .gone : .dead
            } else {
                status = .alive
            }
            return StatusReport.Worker(
                id: beat.worker.id, host: beat.worker.host, pid: beat.worker.pid, status: status, reportedState: beat.state,
                lastSeen: beat.at, lastSeenAgoMs: age, heartbeatIntervalMs: beat.heartbeatIntervalMs, startedAt: beat.startedAt,
                engine: beat.engine, model: beat.model, version: beat.version, assigned: beat.assigned.sorted(),
                currentJobs: beat.currentJobs, running: beat.running, jobTimeoutMs: beat.jobTimeoutMs, jobsDone: beat.jobsDone,
                jobsFailed: beat.jobsFailed, errors: beat.errors, takenOverBy: nil, commitFailure: beat.commitFailure)
        }
        let alive = workers.filter { $0.status == .alive }
        for i in workers.indices where workers[i].status == .dead {
            let held = Set(workers[i].assigned)
            let takers = alive.filter { !held.isDisjoint(with: $0.assigned) }.map(\.id).sorted()
            workers[i].takenOverBy = takers
        }
        let order: [StatusReport.Liveness: Int] = [.dead: 0, .alive: 1, .stopped: 2, .gone: 3]
        return workers.sorted { (order[$0.status] ?? 9, $0.id) < (order[$1.status] ?? 9, $1.id) }
    }

    /// Jobs in a live worker's running list for longer than its job timeout (or `stuckAfter`).
    public static func stuckJobs(_ workers: [StatusReport.Worker], now: Timestamp, stuckAfter: Duration?) -> [StatusReport.StuckJob] {
        var stuck: [StatusReport.StuckJob] = []
        for w in workers where w.status == .alive {
            guard let limit = stuckAfter.map({ Int64($0.milliseconds) }) ?? w.jobTimeoutMs else { continue }
            for job in w.running ?? [] {
                let running = job.since.milliseconds(until: now)
                if running > limit {
                    stuck.append(.init(jobID: job.jobID, worker: w.id, host: w.host, attempt: job.attempt, stage: job.stage,
                                       since: job.since, runningMs: running, limitMs: limit))
                }
            }
        }
        return stuck.sorted { $0.since < $1.since }
    }

    // MARK: - Oldest unfinished job

    /// The record at the committed offset of each lagging partition (one each).
    static func headRecords(_ connection: KafkaConnection, lag: [StatusReport.PartitionLag], timeout: Duration) async -> [KafkaMessage] {
        let starts = lag.filter { $0.lag > 0 }.map {
            TopicPartitionOffset(TopicPartition($0.topic, $0.partition), offset: max($0.committed ?? $0.low, $0.low))
        }
        guard !starts.isEmpty else { return [] }
        return (try? await firstRecords(connection, starts, timeout: timeout)) ?? []
    }

    /// Lagging partitions whose head record has waited longer than `limit` while a live worker
    /// holds the partition and is not running that job (a result, checked by the caller, clears
    /// it). A worker far behind but moving runs or commits its head record well within the limit.
    public static func stalledCandidates(heads: [KafkaMessage], lag: [StatusReport.PartitionLag], workers: [StatusReport.Worker],
                                         now: Timestamp, limit: Duration) -> [StatusReport.StalledPartition] {
        let limitMs = Int64(limit.milliseconds)
        var owners: [TopicPartitionRef: StatusReport.Worker] = [:]
        for w in workers where w.status == .alive {
            for tp in w.assigned where owners[tp] == nil { owners[tp] = w }
        }
        let running = Set(workers.filter { $0.status == .alive }.flatMap(\.currentJobs))
        var out: [StatusReport.StalledPartition] = []
        for message in heads {
            let tp = TopicPartitionRef(topic: message.topic, partition: message.partition)
            guard let owner = owners[tp], let row = lag.first(where: { $0.topic == tp.topic && $0.partition == tp.partition }) else { continue }
            let job = message.value.flatMap { try? LeveeJSON.decode(JobEnvelope.self, from: Data($0)) }
            // A record without a job id cannot be checked for a result: not judged.
            guard let id = job?.jobID ?? message.keyString.flatMap(JobID.init(string:)), !running.contains(id) else { continue }
            let produced = message.timestampMilliseconds.map(Timestamp.init(millisecondsSinceEpoch:)) ?? job?.submittedAt ?? now
            let since = max(produced, job?.notBefore ?? produced)
            let waiting = since.milliseconds(until: now)
            guard waiting > limitMs else { continue }
            out.append(.init(topic: tp.topic, partition: tp.partition, owner: owner.id, ownerLastSeen: owner.lastSeen, lag: row.lag,
                             committed: row.committed, offset: message.offset, jobID: id, waitingSince: since,
                             waitingMs: waiting, limitMs: limitMs))
        }
        return out.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
    }

    /// The head record submitted first.
    static func oldestUnfinished(_ connection: KafkaConnection, heads firsts: [KafkaMessage], now: Timestamp) async -> StatusReport.UnfinishedJob? {
        guard !firsts.isEmpty else { return nil }
        var candidates: [StatusReport.UnfinishedJob] = []
        for message in firsts {
            let job = message.value.flatMap { try? LeveeJSON.decode(JobEnvelope.self, from: Data($0)) }
            let submitted = job?.submittedAt ?? message.timestampMilliseconds.map { Timestamp(millisecondsSinceEpoch: $0) }
            candidates.append(.init(jobID: job?.jobID, key: message.keyString, topic: message.topic, partition: message.partition,
                                    offset: message.offset, attempt: job?.attempt, submittedAt: submitted,
                                    ageMs: submitted.map { $0.milliseconds(until: now) }, notBefore: job?.notBefore, hasResult: false))
        }
        guard var oldest = candidates.min(by: {
            ($0.submittedAt?.millisecondsSinceEpoch ?? .max, $0.topic, $0.partition) < ($1.submittedAt?.millisecondsSinceEpoch ?? .max, $1.topic, $1.partition)
        }) else { return nil }
        if let id = oldest.jobID, (try? await ResultLookup.result(connection, jobID: id)) ?? nil != nil {
            oldest.hasResult = true
        }
        return oldest
    }

    /// The first record at or after each start offset, read with one consumer (no group),
    /// stopping when every partition gave a record or its end, or at `timeout`.
    static func firstRecords(_ connection: KafkaConnection, _ starts: [TopicPartitionOffset],
                             timeout: Duration) async throws -> [KafkaMessage] {
        let consumer = try KafkaConsumer(configuration: connection.configuration(["enable.partition.eof": "true"]),
                                         bufferCapacity: max(16, starts.count * 4))
        defer { Task.detached { await consumer.close() } }
        try consumer.assign(starts)
        let wanted = Set(starts.map(\.topicPartition))
        let found = FoundRecords()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var done: Set<TopicPartition> = []
                for try await event in consumer.events {
                    switch event {
                    case .message(let m) where wanted.contains(m.topicPartition) && !done.contains(m.topicPartition):
                        found.records.withLock { $0[m.topicPartition] = m }
                        done.insert(m.topicPartition)
                    case .partitionEnd(let end) where wanted.contains(end.topicPartition):
                        done.insert(end.topicPartition)
                    default:
                        continue
                    }
                    if done.count == wanted.count { return }
                }
            }
            group.addTask { try await Task.sleep(for: timeout) }
            try await group.next()
            group.cancelAll()
        }
        return found.records.withLock { Array($0.values) }
    }

    /// Records found so far, shared between the reading task and the caller (kept on timeout).
    final class FoundRecords: Sendable {
        let records = Mutex<[TopicPartition: KafkaMessage]>([:])
    }

    // MARK: - Verdict

    /// "levee.jobs[0,1] levee.jobs.retry[0,1]"
    public static func describe(_ partitions: [TopicPartitionRef]) -> String {
        var byTopic: [String: [Int32]] = [:]
        for p in partitions { byTopic[p.topic, default: []].append(p.partition) }
        return byTopic.keys.sorted().map { t in "\(t)[\(byTopic[t]!.sorted().map(String.init).joined(separator: ","))]" }
            .joined(separator: " ")
    }

    static func issues(_ report: StatusReport) -> [StatusReport.Issue] {
        var issues: [StatusReport.Issue] = []
        for w in report.deadWorkers {
            let held = w.assigned.isEmpty ? "no partitions" : describe(w.assigned)
            var detail = "worker \(w.id) on \(w.host) (pid \(w.pid)) is dead: last heartbeat \(w.lastSeen) (\(w.lastSeenAgoMs / 1000) s ago, every \(w.heartbeatIntervalMs) ms); it held \(held)"
            if !w.currentJobs.isEmpty { detail += "; it was running \(w.currentJobs.map(\.description).joined(separator: ", "))" }
            if let takers = w.takenOverBy, !takers.isEmpty {
                detail += "; now held by \(takers.joined(separator: ", "))"
            } else if !w.assigned.isEmpty {
                detail += "; no live worker holds its partitions yet"
            }
            detail += ". Look at host \(w.host)."
            issues.append(.init(kind: "dead_worker", summary: "worker \(w.id) dead (held \(w.assigned.isEmpty ? "nothing" : describe(w.assigned)))",
                                detail: detail))
        }
        for t in report.topics {
            if !t.exists {
                let unusable = t.warnings.first?.contains("unusable") == true
                issues.append(.init(kind: unusable ? "topic_unusable" : "topic_missing", summary: "topic \(t.name) \(unusable ? "unusable" : "missing")",
                                    detail: t.warnings.first ?? ""))
                continue
            }
            for warning in t.warnings {
                if warning.contains("not compacted") {
                    issues.append(.init(kind: "not_compacted", summary: "\(t.name) not compacted", detail: warning))
                } else if warning.contains("no leader") {
                    issues.append(.init(kind: "no_leader", summary: "\(t.name) partitions without leader", detail: warning))
                } else {
                    issues.append(.init(kind: "partitions", summary: "\(t.name) has \(t.partitions ?? 0) partitions, expected \(t.expectedPartitions)", detail: warning))
                }
            }
        }
        for w in report.workers where w.status == .alive {
            guard let failure = w.commitFailure else { continue }
            issues.append(.init(kind: "commits_failing", summary: "worker \(w.id) cannot commit",
                                detail: "worker \(w.id) on \(w.host) has failed \(failure.failures) commits in a row since \(failure.since): \(failure.error). "
                                    + "Its finished jobs wait uncommitted; look at its log and the brokers (levee doctor)."))
        }
        for p in report.stalled {
            issues.append(.init(kind: "stalled_partition", summary: "\(p.topic)[\(p.partition)] queued behind live \(p.owner), not moving",
                                detail: "\(p.topic)[\(p.partition)] has lag \(p.lag) and its first unfinished record (offset \(p.offset)"
                                    + (p.jobID.map { ", job \($0)" } ?? "") + ") has waited \(p.waitingMs / 1000) s, over the \(p.limitMs / 1000) s limit, "
                                    + "while \(p.owner) holds the partition, heartbeats (last \(p.ownerLastSeen)) and is not running it: "
                                    + "its consumer receives nothing from the partition (paused or stuck). Restart \(p.owner)"
                                    + (p.jobID.map { "; levee trace \($0)" } ?? "")))
        }
        for s in report.stuck {
            issues.append(.init(kind: "stuck_job", summary: "job \(s.jobID) stuck on \(s.worker)",
                                detail: "job \(s.jobID) (attempt \(s.attempt)) has been at \(s.stage.rawValue) on \(s.worker)@\(s.host) for \(s.runningMs / 1000) s, over the \(s.limitMs / 1000) s limit (levee trace \(s.jobID))"))
        }
        if report.lag.total > 0 && report.aliveWorkers.isEmpty {
            issues.append(.init(kind: "no_live_worker", summary: "lag \(report.lag.total) and no live worker",
                                detail: "\(report.lag.total) records wait in \(report.group)'s partitions and no worker is alive: start workers (levee worker)"))
        }
        return issues
    }

    static func summary(_ report: StatusReport) -> String {
        guard report.issues.isEmpty else {
            return "ATTENTION: " + report.issues.map(\.summary).joined(separator: ", ")
        }
        let brokers = report.brokers.list.count
        let alive = report.aliveWorkers.count
        return "healthy: \(brokers) broker\(brokers == 1 ? "" : "s"), \(alive) worker\(alive == 1 ? "" : "s") alive, lag \(report.lag.total)"
    }
}
