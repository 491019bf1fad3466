import Foundation
import Synchronization
import Kafka

/// Where a submitted job was written, once the brokers acknowledged it (acks=all): from then on
/// the job is durable and will end with exactly one terminal result.
public struct SubmitReceipt: Codable, Sendable, Equatable {
    public var jobID: JobID
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var submittedAt: Timestamp
    /// From the call to the acknowledgement, in milliseconds.
    public var ackMilliseconds: Double

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", topic, partition, offset, submittedAt = "submitted_at", ackMilliseconds = "ack_ms"
    }
}

/// The library API for business applications: submit jobs, cancel them, read their results.
///
/// Submitting validates the job first (size, kind, parameters) and throws `JobValidationError`
/// with every problem; then it publishes with an idempotent producer (acks=all) keyed by the job
/// id and returns once the job is durable. A job with an idempotency key gets a deterministic id,
/// so submitting it again yields the same id and, through the workers' duplicate check, one result.
public final class JobClient: Sendable {
    public let connection: KafkaConnection
    public let limits: JobLimits
    /// Whether to write the client's trace event: one `accepted` record per job after its ack
    /// (fire-and-forget; it never delays the ack). Trace readers show `submitted` and `accepted`
    /// from it, as from the two records earlier clients wrote.
    public let writesTraceEvents: Bool
    private let producer: KafkaProducer
    private let identity: WorkerIdentity

    public init(connection: KafkaConnection, limits: JobLimits = JobLimits(), writesTraceEvents: Bool = true,
                properties: [String: String] = [:], maxInFlight: Int = 10_000) throws {
        self.connection = connection
        self.limits = limits
        self.writesTraceEvents = writesTraceEvents
        var props = properties
        props["linger.ms"] = props["linger.ms"] ?? "1"
        // Submit latency matters more than packet count: no Nagle delay on small produce requests.
        props["socket.nagle.disable"] = props["socket.nagle.disable"] ?? "true"
        producer = try KafkaProducer(configuration: connection.configuration(props), maxInFlight: maxInFlight)
        identity = WorkerIdentity(id: "client", host: ProcessInfo.processInfo.hostName, pid: ProcessInfo.processInfo.processIdentifier)
    }

    /// Builds a job from its parts; with an idempotency key the id is derived from it.
    public static func makeJob(tenant: String, kind: JobKind, model: String, input: JobInput, params: JobParameters = JobParameters(),
                               idempotencyKey: String? = nil, priority: Int = 5, deadline: Timestamp? = nil,
                               traceparent: TraceParent? = nil, metadata: [String: String]? = nil) -> JobEnvelope {
        let now = Timestamp.now()
        let id = idempotencyKey.map { JobID.derived(tenant: tenant, idempotencyKey: $0) } ?? JobID.make(at: now)
        return JobEnvelope(jobID: id, idempotencyKey: idempotencyKey, tenant: tenant, kind: kind, model: model, input: input,
                           params: params, priority: priority, deadline: deadline, submittedAt: now,
                           traceparent: traceparent ?? .make(), metadata: metadata)
    }

    /// Connects and reads the cluster's metadata, so the first `submit` does not pay for it
    /// (about a second on a fresh connection). Optional; throws if the brokers cannot be reached.
    public func prepare(timeout: Duration = .seconds(10)) async throws {
        let metadata = try await producer.metadata(timeout: timeout)
        guard metadata.topic(connection.layout.jobs) != nil else {
            throw KafkaError(kind: .unknownTopicOrPartition, message: "the jobs topic does not exist; run levee topics create",
                             context: ["topic": connection.layout.jobs])
        }
    }

    /// Validates and publishes `job`; returns once it is durable.
    public func submit(_ job: JobEnvelope) async throws -> SubmitReceipt {
        let started = ContinuousClock.now
        let record = try prepare(job)
        let report = try await producer.send(record)
        return try await accepted(job, report, ackMilliseconds: (ContinuousClock.now - started).milliseconds)
    }

    /// Validates and publishes many jobs at once: encodes them across cores, hands them all to
    /// the producer and awaits their acknowledgements together. The result has one entry per
    /// job, in order: its receipt, or its own error (`JobValidationError` for an invalid job, the
    /// broker's error for a failed write) — a failed job never fails or hides the others. A
    /// receipt's `ackMilliseconds` runs from this call to that job's batch being acknowledged.
    public func submit(_ jobs: [JobEnvelope]) async -> [Result<SubmitReceipt, any Error>] {
        let started = ContinuousClock.now
        let prepared = await prepareAll(jobs)
        var records: [ProducerRecord] = []
        records.reserveCapacity(jobs.count)
        var slots: [Int] = []
        slots.reserveCapacity(jobs.count)
        for (i, p) in prepared.enumerated() {
            if case .success(let record) = p { records.append(record); slots.append(i) }
        }
        let reports = await producer.sendBatch(records)
        let ack = (ContinuousClock.now - started).milliseconds
        var results: [Result<SubmitReceipt, any Error>] = prepared.map { p in
            switch p {
            case .success: .failure(KafkaError(kind: .state, message: "not sent"))  // replaced below
            case .failure(let error): .failure(error)
            }
        }
        for (k, outcome) in reports.enumerated() {
            let i = slots[k]
            switch outcome {
            case .success(let report):
                do { results[i] = .success(try await accepted(jobs[i], report, ackMilliseconds: ack)) }
                catch { results[i] = .failure(error) }
            case .failure(let error):
                results[i] = .failure(error)
            }
        }
        return results
    }

    /// Validation and encoding: the job's record, or why it cannot be sent.
    func prepare(_ job: JobEnvelope) throws -> ProducerRecord {
        try job.validate(limits: limits)
        if let key = job.idempotencyKey, job.jobID != JobID.derived(tenant: job.tenant, idempotencyKey: key) {
            throw JobValidationError(["job_id must be the UUIDv5 of \"<tenant>/<idempotency_key>\" (see schemas/README.md)"])
        }
        let value = try job.jsonBytes()
        guard value.count <= limits.maxRecordBytes else {
            throw JobValidationError(["the job is \(value.count) bytes encoded; the limit is \(limits.maxRecordBytes)"])
        }
        let traceparent = job.traceparent.description
        return ProducerRecord(topic: connection.layout.jobs, key: Array(job.jobID.description.utf8), value: value,
                              headers: [KafkaHeader("traceparent", traceparent)])
    }

    /// `prepare` for every job, in parallel chunks (one per core) when there are many.
    func prepareAll(_ jobs: [JobEnvelope]) async -> [Result<ProducerRecord, any Error>] {
        func one(_ job: JobEnvelope) -> Result<ProducerRecord, any Error> { Result { try prepare(job) } }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard jobs.count >= 512, cores > 1 else { return jobs.map(one) }
        let chunk = (jobs.count + cores - 1) / cores
        return await withTaskGroup(of: (Int, [Result<ProducerRecord, any Error>]).self) { group in
            for start in stride(from: 0, to: jobs.count, by: chunk) {
                let end = min(start + chunk, jobs.count)
                group.addTask { (start, jobs[start..<end].map(one)) }
            }
            var parts: [(Int, [Result<ProducerRecord, any Error>])] = []
            for await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.flatMap(\.1)
        }
    }

    /// After the ack: the receipt, and the client's one trace event (`accepted`, carrying where
    /// the job was written and how long the ack took; trace readers show the `submitted` step from
    /// it, see `TraceEvent.expandingClientEvents`). Fire-and-forget: it never delays the ack.
    private func accepted(_ job: JobEnvelope, _ report: DeliveryReport, ackMilliseconds: Double) async throws -> SubmitReceipt {
        if writesTraceEvents {
            let now = Timestamp.now()
            try await trace(TraceEvent(jobID: job.jobID, stage: .accepted, at: now, attempt: job.attempt, traceparent: job.traceparent,
                                       worker: identity, topic: report.topic, partition: report.partition, offset: report.offset,
                                       durationMs: max(0, job.submittedAt.milliseconds(until: now))))
        }
        return SubmitReceipt(jobID: job.jobID, topic: report.topic, partition: report.partition, offset: report.offset,
                             submittedAt: job.submittedAt, ackMilliseconds: ackMilliseconds)
    }

    /// Asks the workers to cancel a job (through the control topic). A job already finished keeps its result.
    public func cancel(_ jobID: JobID, reason: String? = nil) async throws {
        let record = ControlRecord(jobID: jobID, reason: reason)
        _ = try await producer.send(ProducerRecord(topic: connection.layout.control, key: Array(jobID.description.utf8),
                                                   value: Array(try LeveeJSON.encode(record))))
    }

    /// The job's terminal result, waiting up to `wait` for it; nil if there is none by then.
    public func result(for jobID: JobID, wait: Duration = .zero) async throws -> ResultRecord? {
        try await ResultLookup.result(connection, jobID: jobID, wait: wait)
    }

    /// Waits until every trace event is delivered, then stops the producer.
    public func close() async throws {
        try await producer.close()
    }

    private func trace(_ event: TraceEvent) async throws {
        try await producer.sendAndForget(ProducerRecord(
            topic: connection.layout.trace, key: Array(event.jobID.description.utf8), value: event.jsonBytes()))
    }
}

extension Duration {
    /// The duration in milliseconds, as a Double.
    public var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

/// Finds a job's terminal record in the results topic: the partition comes from the job id
/// (murmur2, like the producers), the start offset from the submit time a UUIDv7 carries.
public enum ResultLookup {
    public static func result(_ connection: KafkaConnection, jobID: JobID, wait: Duration = .zero,
                              since: Timestamp? = nil) async throws -> ResultRecord? {
        let topic = connection.layout.results
        let partitions = try await partitionCount(connection, topic: topic)
        let partition = TopicPartition(topic, KeyPartitioner.partition(for: jobID, partitions: partitions))
        // A result is written after its job was submitted; allow some clock skew between hosts.
        let from = (since ?? jobID.embeddedTime).map { $0.adding(milliseconds: -60_000) }
        let start = try await PartitionScan.offset(connection, partition: partition, atOrAfter: from)
        let key = jobID.description
        // Readers keep the first committed record per job, unless a tombstone (a result deleted
        // by hand) follows it: then the first record after the last tombstone counts.
        let found = Mutex<ResultRecord?>(nil)
        let next = Mutex<Int64>(start)
        let visit: @Sendable (KafkaMessage, Bool) -> PartitionScan.Step = { message, stopOnFind in
            next.withLock { $0 = max($0, message.offset + 1) }
            guard message.keyString == key else { return .next }
            guard let value = message.value else {
                found.withLock { $0 = nil }
                return .next
            }
            guard let record = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) else { return .next }
            found.withLock { if $0 == nil { $0 = record } }
            return stopOnFind ? .stop : .next
        }
        // To the current end first (a tombstone may follow the first record)...
        try await PartitionScan.scan(connection, partition: partition, from: start, follow: false,
                                     deadline: .now + .seconds(10)) { visit($0, false) }
        if let record = found.withLock({ $0 }) { return record }
        guard wait > .zero else { return nil }
        // ...then, when asked to wait, follow new records until the first result arrives.
        try await PartitionScan.scan(connection, partition: partition, from: next.withLock { $0 }, follow: true,
                                     deadline: .now + wait) { visit($0, true) }
        return found.withLock { $0 }
    }

    static func partitionCount(_ connection: KafkaConnection, topic: String) async throws -> Int {
        let admin = try KafkaAdmin(configuration: connection.configuration())
        return try await admin.describeTopic(topic).partitionCount
    }
}
