import Foundation
import Kafka
import Synchronization

/// A job's whole path, read back from the trace topic (and its result, if any), with the final
/// state and a one-line diagnosis of what happened or what is wrong.
public struct JobTrace: Codable, Sendable {
    public var jobID: JobID
    /// The trace partition that holds the job's events (every topic is keyed by job id).
    public var partition: Int32
    /// Events in the order they were written (one partition, so in order).
    public var events: [TraceEvent]
    public var result: ResultRecord?
    /// `succeeded`, `failed`, `expired`, `cancelled`, or `pending` when there is no result.
    public var state: String
    public var diagnosis: String
    /// Trace records read to find the events (bounded: the read starts near the submit time).
    public var recordsScanned: Int

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", partition, events, result, state, diagnosis, recordsScanned = "records_scanned"
    }
}

/// Finds and explains one job's trace. The read is bounded: it starts at the job's submit time
/// (a UUIDv7 carries it; other ids start a bounded window before the end) and stops at the end
/// of the partition, so answering does not grow with the size of the trace topic.
public enum TraceReader {
    public static func trace(_ connection: KafkaConnection, jobID: JobID, maxRecords: Int = 200_000,
                             afterOutcome: Int = 2_000, timeout: Duration = .seconds(20)) async throws -> JobTrace? {
        let topic = connection.layout.trace
        let partitions = try await ResultLookup.partitionCount(connection, topic: topic)
        let partition = TopicPartition(topic, KeyPartitioner.partition(for: jobID, partitions: partitions))
        // A UUIDv7 carries its submit time; an idempotency-key id (UUIDv5) does not, so its job
        // record says when it was submitted. Start a minute early for clock skew between hosts.
        var submitted = jobID.embeddedTime
        if submitted == nil { submitted = try await submitTime(connection, jobID: jobID, timeout: timeout) }
        let since = submitted.map { $0.adding(milliseconds: -60_000) } ?? Timestamp(millisecondsSinceEpoch: 0)
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        let start = try await PartitionScan.startOffsets(consumer, [partition], since: since, backfill: Int64(maxRecords)).first?.offset
            ?? KafkaOffset.beginning
        await consumer.close()
        let key = jobID.description
        // Reading stops at the end of the partition, or `afterOutcome` records after the job's
        // last outcome event (result committed) with nothing new for it: an old job's trace
        // does not read everything written since. A later event (a reconciler requeue, a
        // duplicate run) within that distance extends the read.
        let found = Mutex<(events: [TraceEvent], scanned: Int, sinceOutcome: Int?)>(([], 0, nil))
        try await PartitionScan.scan(connection, partition: partition, from: start, follow: false, deadline: .now + timeout) { message in
            let step = found.withLock { s -> PartitionScan.Step in
                s.scanned += 1
                if message.keyString == key, let value = message.value,
                   let event = try? LeveeJSON.decode(TraceEvent.self, from: Data(value)) {
                    s.events.append(event)
                    s.sinceOutcome = event.stage == .resultCommitted ? 0 : (s.sinceOutcome == nil ? nil : 0)
                } else if let n = s.sinceOutcome {
                    s.sinceOutcome = n + 1
                }
                if s.scanned >= maxRecords { return .stop }
                if let n = s.sinceOutcome, n >= afterOutcome { return .stop }
                return .next
            }
            return step
        }
        let (unordered, scanned) = found.withLock { ($0.events, $0.scanned) }
        // Several producers write a job's events (client, worker's plain and transactional
        // producers, reconciler), so partition order is not event order: show them by time.
        let events = TraceEvent.expandingClientEvents(unordered).enumerated().sorted { a, b in
            (a.element.at, ReconcilerState.rank(a.element.stage), a.offset) < (b.element.at, ReconcilerState.rank(b.element.stage), b.offset)
        }.map(\.element)
        let result = try await ResultLookup.result(connection, jobID: jobID)
        if events.isEmpty && result == nil { return nil }
        // Heartbeats matter only for a job without a result (is its worker still alive?).
        let heartbeats = result == nil ? (try? await latestHeartbeats(connection)) ?? [:] : [:]
        let (state, diagnosis) = diagnose(events: events, result: result, heartbeats: heartbeats)
        return JobTrace(jobID: jobID, partition: partition.partition, events: events, result: result, state: state,
                        diagnosis: diagnosis, recordsScanned: scanned)
    }

    /// The submit time from the job's first record in the jobs topic (its partition only, the
    /// newest `window` records at most); nil when it is not there.
    static func submitTime(_ connection: KafkaConnection, jobID: JobID, window: Int64 = 100_000,
                           timeout: Duration) async throws -> Timestamp? {
        let topic = connection.layout.jobs
        let partitions = try await ResultLookup.partitionCount(connection, topic: topic)
        let partition = TopicPartition(topic, KeyPartitioner.partition(for: jobID, partitions: partitions))
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        let marks = try await consumer.watermarks(partition)
        await consumer.close()
        let key = jobID.description
        let found = Mutex<Timestamp?>(nil)
        try await PartitionScan.scan(connection, partition: partition, from: max(marks.low, marks.high - window), follow: false,
                                     deadline: .now + timeout) { message in
            guard message.keyString == key, let value = message.value,
                  let job = try? LeveeJSON.decode(JobEnvelope.self, from: Data(value)) else { return .next }
            found.withLock { $0 = job.submittedAt }
            return .stop
        }
        return found.withLock { $0 }
    }

    /// The newest heartbeat per worker id (the workers topic is small and compacted).
    static func latestHeartbeats(_ connection: KafkaConnection) async throws -> [String: WorkerHeartbeat] {
        try await StatusReader.latestHeartbeats(connection, tail: 5000)
    }

    static func clock(_ t: Timestamp) -> String { String(t.description.dropFirst(11).dropLast(1)) }

    /// The final state and one line saying what happened, or what is wrong (with the callback's
    /// fate when the job has one).
    public static func diagnose(events: [TraceEvent], result: ResultRecord?, heartbeats: [String: WorkerHeartbeat],
                                now: Timestamp = .now(), slaMs: Int64 = 120_000) -> (String, String) {
        let (state, line) = diagnoseJob(events: events, result: result, heartbeats: heartbeats, now: now, slaMs: slaMs)
        let callbacks = events.filter { [.callbackFailed, .callbackDelivered, .callbackAbandoned].contains($0.stage) }
        guard result != nil, let last = callbacks.last else { return (state, line) }
        let failures = callbacks.filter { $0.stage == .callbackFailed }.count
        switch last.stage {
        case .callbackDelivered:
            return (state, line + "; callback delivered at \(clock(last.at))" + (failures > 0 ? " after \(failures) failed attempt\(failures == 1 ? "" : "s")" : ""))
        case .callbackAbandoned:
            return (state, line + "; callback abandoned after \(failures) failed attempts: \(last.detail ?? "")")
        default:
            return (state, line + "; callback failing (\(failures) attempt\(failures == 1 ? "" : "s"), last: \(last.detail ?? "?")), retrying")
        }
    }

    static func diagnoseJob(events: [TraceEvent], result: ResultRecord?, heartbeats: [String: WorkerHeartbeat],
                            now: Timestamp, slaMs: Int64) -> (String, String) {
        let retries = events.filter { $0.stage == .retryScheduled }
        let receivers = events.filter { $0.stage == .received }.compactMap { e in e.worker.map { ($0.id, e.at) } }
        var distinctReceivers: [String] = []
        for (id, _) in receivers where distinctReceivers.last != id { distinctReceivers.append(id) }
        let redelivered = distinctReceivers.count > 1
            ? "received by \(distinctReceivers.dropLast().joined(separator: ", then ")), redelivered to \(distinctReceivers.last!); " : ""
        let requeues = events.filter { $0.stage == .requeued }
        let requeued = requeues.isEmpty ? "" : "requeued by the reconciler at \(requeues.map { clock($0.at) }.joined(separator: ", "))"
            + (requeues.last?.detail.map { " (\($0.replacingOccurrences(of: "requeued by the reconciler: ", with: "")))" } ?? "") + "; "
        if let result {
            let worker = result.worker?.id ?? "?"
            switch result.status {
            case .succeeded:
                var line = requeued + redelivered
                if !retries.isEmpty {
                    let first = retries.first?.error?.errorClass.rawValue.replacingOccurrences(of: "_", with: " ") ?? "an error"
                    line += "retried \(retries.count)× after \(first), succeeded on \(worker)"
                } else {
                    line += "succeeded on \(worker)"
                }
                if let t = result.timings { line += " (queue \(t.queueMs) ms, inference \(t.inferenceMs) ms, total \(t.totalMs) ms)" }
                return ("succeeded", line)
            case .failed:
                let error = result.error
                if error?.errorClass == .poisonInput {
                    // A dead letter that keeps only part of the original says so in its event.
                    let cut = events.last { $0.stage == .deadLettered && $0.detail?.contains("the dead letter keeps the first") == true }
                    return ("failed", "poison: \(error?.message ?? "unusable record"), in DLQ"
                            + (cut != nil ? " (first part of the original only; the whole stays at its source offset)" : ""))
                }
                return ("failed", redelivered + "failed on attempt \(result.attempt) on \(worker): \(error?.description ?? "unknown error")")
            case .expired:
                return ("expired", "expired: \(result.error?.message ?? "deadline passed")")
            case .cancelled:
                return ("cancelled", "cancelled on \(worker): \(result.error?.message ?? "cancel requested")")
            }
        }
        guard let last = events.last else { return ("pending", "no trace events") }
        // Queued past the SLA in a partition a live worker holds: its lag is not moving while
        // the owner heartbeats (the reconciler and `levee status` report the partition).
        if [.submitted, .accepted, .requeued].contains(last.stage), let topic = last.topic, let partition = last.partition,
           last.at.milliseconds(until: now) > slaMs {
            let tp = TopicPartitionRef(topic: topic, partition: partition)
            let owner = heartbeats.values.filter {
                $0.state != .stopped && $0.at.milliseconds(until: now) <= 3 * max($0.heartbeatIntervalMs, 1) && $0.assigned.contains(tp)
            }.min { $0.worker.id < $1.worker.id }
            if let owner {
                let waited = last.at.milliseconds(until: now) / 1000
                return ("pending", "\(requeued)queued behind a live owner past the SLA: \(last.stage == .requeued ? "requeued" : "accepted") at \(clock(last.at)) on \(topic)[\(partition)]@\(last.offset ?? -1), "
                            + "held by \(owner.worker.id) (alive, heartbeat \(owner.at.milliseconds(until: now) / 1000) s ago) but not received in \(waited) s: "
                            + "the partition's lag is not moving (levee status; restart \(owner.worker.id))")
            }
        }
        switch last.stage {
        case .requeued:
            return ("pending", "\(requeued)queued again as attempt \(last.attempt), not yet received by any worker")
        case .retryScheduled:
            return ("pending", "waiting for retry \(last.attempt + 1) at \(last.notBefore.map(clock) ?? "?") after \(last.error?.description ?? "an error")")
        case .submitted, .accepted:
            let where_ = last.partition.map { " on \(last.topic ?? "")[\($0)]@\(last.offset ?? -1)" } ?? ""
            return ("pending", "queued: accepted at \(clock(last.at))\(where_), not yet received by any worker (are workers running? see levee status)")
        default:
            let worker = last.worker?.id ?? "?"
            var line = "stuck: \(last.stage.rawValue.replacingOccurrences(of: "_", with: " ")) by \(worker) at \(clock(last.at)), no event since"
            if let beat = heartbeats[worker] {
                let age = beat.at.milliseconds(until: now)
                if beat.state == .stopped {
                    line += ", \(worker) stopped at \(clock(beat.at))"
                } else if age > 3 * beat.heartbeatIntervalMs {
                    line += ", \(worker) heartbeat lost at \(clock(beat.at))"
                } else {
                    line += ", \(worker) is alive (heartbeat \(age / 1000) s ago)"
                }
            }
            return ("pending", line)
        }
    }
}
