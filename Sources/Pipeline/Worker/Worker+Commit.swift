import Foundation
import Kafka

extension Worker {
    // MARK: - Outcomes

    /// Records an outcome: it waits for the next commit, and its offset counts as finished.
    /// Both happen under one lock so a commit never includes an offset without its records.
    func finish(_ outcome: Outcome, _ context: RunContext) {
        let outcome = fitted(outcome)
        let kept = state.withLock { s -> Bool in
            guard s.epochs[outcome.partition] == outcome.epoch else { return false }
            s.tracker.finished(outcome.partition, offset: outcome.offset)
            s.pending.append(outcome)
            return true
        }
        if !kept {
            log(.init(level: "info", message: "outcome dropped: partition revoked while the job ran; its next owner runs it",
                      fields: ["job_id": outcome.jobID?.description ?? "?", "partition": "\(outcome.partition.topic)[\(outcome.partition.partition)]"]))
        }
    }

    func succeeded(_ item: WorkItem, _ output: ResultOutput, inferenceMs: Int64, model: String) -> Outcome {
        let job = item.job
        let now = Timestamp.now()
        let result = ResultRecord(
            jobID: job.jobID, status: .succeeded, attempt: job.attempt, tenant: job.tenant, model: job.model, output: output,
            worker: identity, submittedAt: job.submittedAt, completedAt: now,
            timings: ResultTimings(queueMs: max(0, job.submittedAt.milliseconds(until: item.receivedAt)), inferenceMs: inferenceMs,
                                   totalMs: max(0, job.submittedAt.milliseconds(until: now))),
            traceparent: job.traceparent, metadata: job.metadata)
        let events = [
            event(item, .inferenceFinished, model: model, promptTokens: output.promptTokens, completionTokens: output.completionTokens,
                  durationMs: inferenceMs),
            event(item, .resultCommitted, topic: connection.layout.results, status: .succeeded),
        ]
        return Outcome(item: item, records: [resultRecord(result)] + traceRecords(events), status: .succeeded, isFinal: true)
    }

    /// A terminal outcome other than success; `stage` adds its own event (expired, cancelled).
    func terminal(_ item: WorkItem, _ status: JobStatus, error: JobError, stage: TraceStage?, inferenceMs: Int64 = 0) -> Outcome {
        let job = item.job
        let now = Timestamp.now()
        let result = ResultRecord(
            jobID: job.jobID, status: status, attempt: job.attempt, tenant: job.tenant, model: job.model, error: error,
            worker: identity, submittedAt: job.submittedAt, completedAt: now,
            timings: ResultTimings(queueMs: max(0, job.submittedAt.milliseconds(until: item.receivedAt)), inferenceMs: inferenceMs,
                                   totalMs: max(0, job.submittedAt.milliseconds(until: now))),
            traceparent: job.traceparent, metadata: job.metadata)
        var events: [TraceEvent] = []
        if let stage { events.append(event(item, stage, error: error)) }
        events.append(event(item, .resultCommitted, error: stage == nil ? error : nil, topic: connection.layout.results, status: status))
        var outcome = Outcome(item: item, records: [resultRecord(result)] + traceRecords(events), status: status, isFinal: true)
        outcome.errorClass = error.errorClass
        return outcome
    }

    /// A record that is not a usable job: a failed result (when it has a job id) and a dead letter
    /// with the original bytes, at once and without retries.
    func poisonOutcome(jobID: JobID?, reason: JobError, original: Data, source: Source, message: KafkaMessage) -> Outcome {
        let layout = connection.layout
        let key = jobID.map { Array($0.description.utf8) }
        // The dead letter must fit the topic whatever the original's size: above the bound it keeps
        // a prefix, with the whole original's size and SHA-256 (the original stays at its source).
        let room = state.withLock { $0.recordLimits }.limit(for: layout.deadLetters) - (key?.count ?? 0)
        let dead = DeadLetter.fitting(DeadLetter(jobID: jobID, reason: reason, original: original,
                                                 source: TopicPartitionRef(topic: message.topic, partition: message.partition),
                                                 sourceOffset: message.offset, attempt: nil, worker: identity),
                                      maxEncodedBytes: room)
        var records: [ProducerRecord] = []
        if let value = try? LeveeJSON.encode(dead) {
            records.append(ProducerRecord(topic: layout.deadLetters, key: key, value: Array(value)))
        }
        var status: JobStatus?
        if let jobID {
            status = .failed
            let result = ResultRecord(jobID: jobID, status: .failed, attempt: 1, error: reason, worker: identity)
            records.append(resultRecord(result))
            let base = TraceEvent(jobID: jobID, stage: .deadLettered, attempt: 1, worker: identity, topic: message.topic,
                                  partition: message.partition, offset: message.offset, generation: source.generation, error: reason,
                                  detail: Self.deadLetterDetail(dead))
            var committed = base
            committed.stage = .resultCommitted
            committed.topic = layout.results
            committed.status = .failed
            committed.error = nil
            records += traceRecords([base, committed])
        } else {
            log(.init(level: "warning", message: "record without a job id dead-lettered: \(reason.message)",
                      fields: ["partition": "\(message.topic)[\(message.partition)]", "offset": String(message.offset)]))
        }
        var outcome = Outcome(jobID: jobID, source: source, records: records, status: status, deadLettered: true)
        outcome.errorClass = reason.errorClass
        outcome.deadLetter = dead
        return outcome
    }

    /// What the dead-lettered trace event says about a dead letter that holds only part of the original.
    static func deadLetterDetail(_ dead: DeadLetter) -> String? {
        guard dead.originalTruncated == true else { return nil }
        return "original is \(dead.originalSize ?? 0) bytes (sha256 \(dead.originalSHA256 ?? "?")); the dead letter keeps the first "
            + "\(dead.original.count), the whole stays at \(dead.source.topic)[\(dead.source.partition)] offset \(dead.sourceOffset) until retention"
    }

    func resultRecord(_ result: ResultRecord) -> ProducerRecord {
        ProducerRecord(topic: connection.layout.results, key: Array(result.jobID.description.utf8),
                       value: Array((try? LeveeJSON.encode(result)) ?? Data()))
    }

    func event(_ item: WorkItem, _ stage: TraceStage, error: JobError? = nil, model: String? = nil, promptTokens: Int? = nil,
               completionTokens: Int? = nil, durationMs: Int64? = nil, topic: String? = nil, notBefore: Timestamp? = nil,
               status: JobStatus? = nil, detail: String? = nil) -> TraceEvent {
        let here = topic == nil
        return TraceEvent(jobID: item.job.jobID, stage: stage, attempt: item.job.attempt, traceparent: item.job.traceparent,
                          worker: identity, topic: topic ?? item.partition.topic, partition: here ? item.partition.partition : nil,
                          offset: here ? item.offset : nil, generation: item.generation, error: error, model: model,
                          promptTokens: promptTokens, completionTokens: completionTokens, durationMs: durationMs,
                          notBefore: notBefore, status: status, detail: detail)
    }

    func traceRecords(_ events: [TraceEvent]) -> [ProducerRecord] {
        events.compactMap { event in
            // Error messages and details may quote the job (an unknown model's name, say): keep
            // them short, so no job can make its trace event too large for the topic.
            var event = event
            if let message = event.error?.message { event.error?.message = message.clipped(toBytes: Self.maxTextBytes) }
            event.detail = event.detail?.clipped(toBytes: Self.maxTextBytes)
            event.model = event.model?.clipped(toBytes: 256)
            guard let value = try? LeveeJSON.encode(event) else { return nil }
            return ProducerRecord(topic: connection.layout.trace, key: Array(event.jobID.description.utf8), value: Array(value))
        }
    }

    /// Publishes a trace event now, outside any transaction (received, inference started, handed
    /// back): these must be visible even if the worker dies before its next commit.
    func emitNow(_ event: TraceEvent, _ context: RunContext) async {
        logEvent(event)
        for record in traceRecords([event]) {
            do { try await context.plain.sendAndForget(record) } catch {
                log(.init(level: "warning", message: "trace event not sent: \(error)", fields: ["job_id": event.jobID.description]))
            }
        }
    }

    // MARK: - Records the broker refuses

    /// Most bytes of an error message or detail in a trace event.
    static let maxTextBytes = 4096

    /// `outcome`, or, when one of its records is over its topic's size limit (a long completion,
    /// a job near the jobs topic's limit sent back to the retry topic), the outcome rebuilt as a
    /// failure that fits: the job still ends with exactly one terminal record, never a stall.
    func fitted(_ outcome: Outcome) -> Outcome {
        let limits = state.withLock { $0.recordLimits }
        guard let record = outcome.records.first(where: { !limits.fits($0) }) else { return outcome }
        let size = RecordLimits.size(of: record)
        return refused(outcome, because: "the \(record.topic) record would be \(size) bytes; "
                       + "the topic takes at most \(limits.limit(for: record.topic))", topic: record.topic)
    }

    /// `outcome` rebuilt smaller after a record of it was refused for good, each time smaller:
    /// first a failed result (class `record_rejected`) with its trace event — and, for a poison
    /// record, a dead letter without the original; then the failed result alone; after that the
    /// same again, later (the outcome waits, its partition's offset stays before it, the worker
    /// reports it: a broker that refuses even that is misconfigured, and the job is not lost).
    func refused(_ outcome: Outcome, because reason: String, topic: String) -> Outcome {
        metrics.recordsRefused.labels([topic]).increment()
        state.withLock { $0.statistics.recordsRefused += 1 }
        let level = outcome.refusals + 1
        var error = JobError(.recordRejected, "could not write the job's outcome: \(reason)".clipped(toBytes: Self.maxTextBytes))
        if let dead = outcome.deadLetter {
            // A poison record stays poison; its result also says why its dead letter is missing or cut.
            error = JobError(dead.reason.errorClass, dead.reason.message.clipped(toBytes: 1024)
                             + "; its dead letter could not be written whole: \(reason)".clipped(toBytes: 2048))
        }
        log(.init(level: "error", message: "record refused by the broker; the job's outcome is rebuilt as a failure",
                  fields: ["job_id": outcome.jobID?.description ?? "?", "topic": topic, "reason": error.message, "level": String(level)]))
        let layout = connection.layout
        var records: [ProducerRecord] = []
        if let jobID = outcome.jobID {
            let job = outcome.item?.job
            let result = ResultRecord(jobID: jobID, status: .failed, attempt: job?.attempt ?? 1, tenant: job?.tenant,
                                      model: job?.model.clipped(toBytes: 256), error: error, worker: identity,
                                      submittedAt: job?.submittedAt, traceparent: job?.traceparent)
            records.append(resultRecord(result))
            if level == 1 {
                let event = TraceEvent(jobID: jobID, stage: .resultCommitted, attempt: job?.attempt ?? 1, traceparent: job?.traceparent,
                                       worker: identity, topic: layout.results, generation: outcome.generation, error: error,
                                       status: .failed)
                records += traceRecords([event])
            }
        }
        // A record without a job id has only its dead letter to show for it: keep that one, small.
        if level == 1 || outcome.jobID == nil, var dead = outcome.deadLetter {
            dead.original = Data()
            dead.originalTruncated = true
            dead.reason.message = dead.reason.message.clipped(toBytes: 512)
            if let value = try? LeveeJSON.encode(dead) {
                records.append(ProducerRecord(topic: layout.deadLetters, key: outcome.jobID.map { Array($0.description.utf8) },
                                              value: Array(value)))
            }
        }
        var rebuilt = outcome
        rebuilt.records = records
        rebuilt.refusals = level
        rebuilt.isFinal = outcome.jobID != nil
        rebuilt.status = outcome.jobID != nil ? .failed : nil
        rebuilt.retried = false
        rebuilt.errorClass = error.errorClass
        rebuilt.deadLettered = records.contains { $0.topic == layout.deadLetters }
        if level >= 3 {
            rebuilt.retryAt = .now + .seconds(min(30, 1 << min(level - 3, 5)))
        }
        return rebuilt
    }

    // MARK: - Committing

    func commitLoop(_ context: RunContext) async throws {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.commitInterval)
            if Task.isCancelled { return }
            // A failed commit asks for a pause before the next try; taken here, with no commit in
            // flight, so a rebalance never waits for it.
            let pause = try await commitOnce(context)
            if pause > .zero { try? await Task.sleep(for: pause) }
            let done = state.withLock { $0.finalCommitRequested && $0.pending.isEmpty }
            if done {
                _ = try await commitOnce(context)
                finalCommitDone.fire()
                return
            }
        }
    }

    /// Why a commit did not happen.
    enum CommitFailure: Error {
        /// Records of the batch failed, each with its own error (by index into the batch's records).
        case records([Int: KafkaError])
    }

    /// Commits pending outcomes and the offsets they release, in one transaction (exactly-once)
    /// or produce-then-commit (at-least-once).
    ///
    /// A record the broker refuses for good (too large, invalid, not authorized) does not block the
    /// batch: its outcome is rebuilt as a failure that fits (`refused`) and the batch is tried again
    /// at once. Other failures are retried with a growing pause (up to `commitRetryMaxDelay`), counted
    /// in `levee_commit_retries_total{reason}`, and after `commitFailureGrace` make the worker unready.
    /// Returns how long to pause before the next try (zero after a success).
    @discardableResult
    func commitOnce(_ context: RunContext) async throws -> Duration {
        let now = ContinuousClock.now
        let (outcomes, offsets) = state.withLock { s -> ([Outcome], [TopicPartitionOffset]) in
            var outcomes: [Outcome] = [], left: [Outcome] = []
            for outcome in s.pending {
                if outcomes.count < configuration.commitBatchSize && (outcome.retryAt.map { $0 <= now } ?? true) {
                    outcomes.append(outcome)
                } else {
                    left.append(outcome)
                }
            }
            s.pending = PendingOutcomes(left)
            // An offset is committed only with the records of every outcome before it: never past
            // an outcome left for a later commit (a full batch, or one waiting to be tried again).
            var before: [TopicPartitionRef: Int64] = [:]
            for outcome in left { before[outcome.partition] = min(before[outcome.partition] ?? .max, outcome.offset) }
            var offsets: [TopicPartitionOffset] = []
            for (partition, offset) in s.tracker.committableOffsets where s.epochs[partition] != nil {
                let next = min(offset, before[partition] ?? .max)
                if let last = s.lastCommitted[partition], next <= last { continue }
                offsets.append(TopicPartitionOffset(partition.topic, partition.partition, offset: next))
            }
            s.beginCommit(outcomes, hasOffsets: !offsets.isEmpty)
            return (outcomes, offsets)
        }
        guard !outcomes.isEmpty || !offsets.isEmpty else { return .zero }
        defer { commitEnded() }
        let records = outcomes.flatMap(\.records)
        var delivered: [Result<DeliveryReport, KafkaError>] = []
        do {
            if let producer = context.transactional {
                try producer.beginTransaction()
                // The records go out while the offsets are added; each record's own outcome tells
                // which one the broker refused, if any.
                async let deliveries = producer.sendBatch(records)
                if !offsets.isEmpty {
                    try await producer.sendOffsets(offsets, groupMetadata: try context.consumer.groupMetadata())
                }
                delivered = await deliveries
                try Self.check(delivered)
                try await producer.commitTransaction()
            } else {
                delivered = await context.plain.sendBatch(records)
                try Self.check(delivered)
                if !offsets.isEmpty { try await context.consumer.commit(offsets) }
            }
        } catch {
            var fatal = (error as? KafkaError).flatMap { $0.kind == .fatal ? $0 : nil } ?? context.transactional?.fatalError
            if case CommitFailure.records(let failures) = error, fatal == nil { fatal = failures.values.first { $0.kind == .fatal } }
            if let error = fatal {
                log(.init(level: "error", message: "transactional producer unusable (\(error)); the worker stops so a new instance can take over",
                          fields: [:]))
                throw error
            }
            if let producer = context.transactional { try? await producer.abortTransaction() }
            return commitFailed(outcomes, records: records, delivered: delivered, error: error)
        }
        state.withLock { s in
            for o in offsets { s.lastCommitted[TopicPartitionRef(topic: o.topic, partition: o.partition)] = o.offset }
            s.statistics.transactionsCommitted += 1
            if s.commitFailures > 0 {
                log(.init(message: "commits succeed again", fields: ["failed_before": String(s.commitFailures)]))
            }
            s.commitFailures = 0
            s.commitFailingSince = nil
            s.commitFailingSinceInstant = nil
            s.lastCommitError = nil
            metrics.transactionCommits.increment()
            if !outcomes.isEmpty { metrics.batchSize.observe(Double(outcomes.count)) }
            for outcome in outcomes {
                if outcome.isFinal, let id = outcome.jobID { s.completed.insert(id) }
                switch outcome.status {
                case .succeeded?:
                    s.statistics.succeeded += 1
                    metrics.jobsSucceeded.increment()
                case .failed?:
                    s.statistics.failed += 1
                    metrics.recordFailure(outcome.errorClass ?? .other)
                case .expired?: s.statistics.expired += 1
                case .cancelled?: s.statistics.cancelled += 1
                case nil: break
                }
                if outcome.retried {
                    s.statistics.retried += 1
                    metrics.recordRetry(outcome.errorClass ?? .other)
                }
                if outcome.deadLettered {
                    s.statistics.deadLettered += 1
                    metrics.recordDeadLetter(outcome.errorClass ?? .poisonInput)
                }
            }
        }
        if configuration.logEvents {
            for record in records where record.topic == connection.layout.trace {
                if let value = record.value, let event = try? LeveeJSON.decode(TraceEvent.self, from: Data(value)) { logEvent(event) }
            }
        }
        return .zero
    }

    /// Throws the records' own failures, if any record failed.
    static func check(_ delivered: [Result<DeliveryReport, KafkaError>]) throws {
        var failures: [Int: KafkaError] = [:]
        for (index, result) in delivered.enumerated() {
            if case .failure(let error) = result { failures[index] = error }
        }
        if !failures.isEmpty { throw CommitFailure.records(failures) }
    }

    /// After a failed commit: outcomes whose record the broker refused for good are rebuilt (and the
    /// batch is tried again at once); everything else goes back to wait for the next try, after a pause.
    func commitFailed(_ outcomes: [Outcome], records: [ProducerRecord], delivered: [Result<DeliveryReport, KafkaError>],
                      error: any Error) -> Duration {
        var retry = outcomes
        var refusals = 0
        var firstError: KafkaError? = error as? KafkaError
        if case CommitFailure.records(let failures) = error {
            // Which outcome each record belongs to.
            var owner: [Int] = []
            for (index, outcome) in outcomes.enumerated() { owner += Array(repeating: index, count: outcome.records.count) }
            var refusedOutcomes: [Int: (error: KafkaError, topic: String)] = [:]
            for (recordIndex, failure) in failures.sorted(by: { $0.key < $1.key }) {
                if firstError == nil { firstError = failure }
                if failure.refusesRecord, refusedOutcomes[owner[recordIndex]] == nil {
                    refusedOutcomes[owner[recordIndex]] = (failure, records[recordIndex].topic)
                }
            }
            for (index, refusal) in refusedOutcomes {
                retry[index] = refused(outcomes[index], because: refusal.error.description, topic: refusal.topic)
                refusals += 1
            }
            if configuration.delivery == .atLeastOnce {
                // Without a transaction the delivered records stay written: send only what failed.
                for index in retry.indices where refusedOutcomes[index] == nil {
                    let start = outcomeRecordStart(outcomes, index)
                    let mine = start..<(start + outcomes[index].records.count)
                    retry[index].records = mine.compactMap { failures[$0] == nil ? nil : records[$0] }
                }
            }
        }
        let reason = refusals > 0 ? "record_refused" : (firstError?.codeName ?? firstError.map { $0.kind.rawValue } ?? "error").lowercased()
        metrics.commitRetries.labels([reason]).increment()
        metrics.transactionAborts.labels([firstError?.kind.rawValue ?? "error"]).increment()
        let failures = state.withLock { s -> Int in
            s.pending.prepend(contentsOf: retry)
            s.statistics.transactionsAborted += 1
            s.statistics.commitRetries += 1
            if refusals > 0 { return 0 }
            s.commitFailures += 1
            if s.commitFailingSince == nil {
                s.commitFailingSince = .now()
                s.commitFailingSinceInstant = .now
            }
            s.lastCommitError = "\(firstError.map { "\($0)" } ?? "\(error)")"
            return s.commitFailures
        }
        log(.init(level: "warning", message: "commit failed, will retry: \(firstError.map { "\($0)" } ?? "\(error)")",
                  fields: ["outcomes": String(outcomes.count), "refused": String(refusals), "failures_in_a_row": String(failures)]))
        guard refusals == 0 else { return .zero }
        // 100 ms, 200 ms, ... up to commitRetryMaxDelay.
        return min(configuration.commitRetryMaxDelay, .milliseconds(100 * (1 << min(failures - 1, 10))))
    }

    private func outcomeRecordStart(_ outcomes: [Outcome], _ index: Int) -> Int {
        outcomes[..<index].reduce(0) { $0 + $1.records.count }
    }

    // MARK: - Heartbeats and logs

    func heartbeatLoop(_ context: RunContext) async {
        while !Task.isCancelled {
            await heartbeat(context, state: stopRequested.isFired ? .draining : .running)
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    func heartbeat(_ context: RunContext, state workerState: WorkerState) async {
        let beat = state.withLock { s in
            WorkerHeartbeat(worker: identity, state: s.ready ? workerState : .starting, startedAt: startedAt,
                            heartbeatIntervalMs: Int64(configuration.heartbeatInterval.milliseconds), version: LeveeVersion.current,
                            engine: engine.name, model: engine.modelID, concurrency: configuration.concurrency, generation: s.generation,
                            assigned: s.epochs.keys.sorted(), currentJobs: s.running.keys.sorted(),
                            jobsDone: Int64(s.statistics.terminal), jobsFailed: Int64(s.statistics.failed),
                            errors: Int64(s.statistics.transactionsAborted),
                            running: s.running.values.map { RunningJobRef(jobID: $0.item.job.jobID, attempt: $0.item.job.attempt, since: $0.startedAt) }
                                .sorted { $0.since < $1.since },
                            jobTimeoutMs: Int64(configuration.jobTimeout.milliseconds),
                            commitFailure: s.commitFailingSince.map { CommitFailureRef(since: $0, failures: s.commitFailures, error: s.lastCommitError ?? "?") })
        }
        let beatState = workerState == .stopped ? WorkerState.stopped : beat.state
        var record = beat
        record.state = beatState
        guard let value = try? LeveeJSON.encode(record) else { return }
        metrics.heartbeat(at: Date().timeIntervalSince1970)
        metrics.assignedPartitions.set(Double(record.assigned.count))
        try? await context.plain.sendAndForget(ProducerRecord(topic: connection.layout.workers, key: Array(identity.id.utf8), value: Array(value)))
        if workerState == .stopped { try? await context.plain.flush(timeout: .seconds(5)) }
    }

    func statisticsFields() -> [String: String] {
        let s = statistics
        return ["received": String(s.received), "succeeded": String(s.succeeded), "failed": String(s.failed),
                "expired": String(s.expired), "cancelled": String(s.cancelled), "retried": String(s.retried),
                "dead_lettered": String(s.deadLettered), "duplicates_skipped": String(s.duplicatesSkipped),
                "handed_back": String(s.handedBack), "commits": String(s.transactionsCommitted), "aborts": String(s.transactionsAborted)]
    }

    func logEvent(_ event: TraceEvent) {
        guard configuration.logEvents, let data = try? LeveeJSON.encode(event) else { return }
        FileHandle.standardError.write(data + Data("\n".utf8))
    }

    func log(_ line: LogLine) {
        guard configuration.logEvents else { return }
        line.write()
    }
}

/// A worker log line that is not a trace event: `{"level":…,"msg":…,"at":…, fields…}`.
struct LogLine {
    var level = "info"
    var message: String
    var fields: [String: String]

    func write() {
        var object = fields
        object["level"] = level
        object["msg"] = message
        object["at"] = Timestamp.now().description
        if let data = try? LeveeJSON.encode(object) { FileHandle.standardError.write(data + Data("\n".utf8)) }
    }
}

/// Levee's version, reported in heartbeats and by `levee version`.
public enum LeveeVersion {
    public static let current = "0.1.0"
}
