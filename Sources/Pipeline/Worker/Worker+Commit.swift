import Foundation
import Kafka

extension Worker {
    // MARK: - Outcomes

    /// Records an outcome: it waits for the next commit, and its offset counts as finished.
    /// Both happen under one lock so a commit never includes an offset without its records.
    func finish(_ outcome: Outcome, _ context: RunContext) {
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
        let dead = DeadLetter(jobID: jobID, reason: reason, original: original,
                              source: TopicPartitionRef(topic: message.topic, partition: message.partition),
                              sourceOffset: message.offset, attempt: nil, worker: identity)
        var records: [ProducerRecord] = []
        if let value = try? LeveeJSON.encode(dead) {
            records.append(ProducerRecord(topic: layout.deadLetters, key: jobID.map { Array($0.description.utf8) },
                                          value: Array(value)))
        }
        var status: JobStatus?
        if let jobID {
            status = .failed
            let result = ResultRecord(jobID: jobID, status: .failed, attempt: 1, error: reason, worker: identity)
            records.append(resultRecord(result))
            let base = TraceEvent(jobID: jobID, stage: .deadLettered, attempt: 1, worker: identity, topic: message.topic,
                                  partition: message.partition, offset: message.offset, generation: source.generation, error: reason)
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
        return outcome
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

    // MARK: - Committing

    func commitLoop(_ context: RunContext) async throws {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.commitInterval)
            if Task.isCancelled { return }
            try await commitOnce(context)
            let done = state.withLock { $0.finalCommitRequested && $0.pending.isEmpty }
            if done {
                try await commitOnce(context)
                finalCommitDone.fire()
                return
            }
        }
    }

    /// Commits pending outcomes and the offsets they release, in one transaction (exactly-once)
    /// or produce-then-commit (at-least-once).
    func commitOnce(_ context: RunContext) async throws {
        let (outcomes, offsets) = state.withLock { s -> ([Outcome], [TopicPartitionOffset]) in
            let take = min(s.pending.count, configuration.commitBatchSize)
            let outcomes = Array(s.pending.prefix(take))
            s.pending.removeFirst(take)
            var offsets: [TopicPartitionOffset] = []
            for (partition, offset) in s.tracker.committableOffsets where s.epochs[partition] != nil && s.lastCommitted[partition] != offset {
                offsets.append(TopicPartitionOffset(partition.topic, partition.partition, offset: offset))
            }
            s.beginCommit(outcomes, hasOffsets: !offsets.isEmpty)
            return (outcomes, offsets)
        }
        guard !outcomes.isEmpty || !offsets.isEmpty else { return }
        defer { commitEnded() }
        let records = outcomes.flatMap(\.records)
        do {
            if let producer = context.transactional {
                try producer.beginTransaction()
                for record in records { try await producer.sendAndForget(record) }
                if !offsets.isEmpty {
                    try await producer.sendOffsets(offsets, groupMetadata: try context.consumer.groupMetadata())
                }
                try await producer.commitTransaction()
            } else {
                for record in records { try await context.plain.sendAndForget(record) }
                try await context.plain.flush()
                if !offsets.isEmpty { try await context.consumer.commit(offsets) }
            }
        } catch let error as KafkaError {
            if error.kind == .fatal {
                log(.init(level: "error", message: "transactional producer unusable (\(error)); the worker stops so a new instance can take over",
                          fields: [:]))
                throw error
            }
            if let producer = context.transactional { try? await producer.abortTransaction() }
            state.withLock { s in
                s.pending.insert(contentsOf: outcomes, at: 0)
                s.statistics.transactionsAborted += 1
            }
            metrics.transactionAborts.labels([error.kind.rawValue]).increment()
            log(.init(level: "warning", message: "commit failed, will retry: \(error)", fields: ["outcomes": String(outcomes.count)]))
            try? await Task.sleep(for: .milliseconds(100))
            return
        }
        state.withLock { s in
            for o in offsets { s.lastCommitted[TopicPartitionRef(topic: o.topic, partition: o.partition)] = o.offset }
            s.statistics.transactionsCommitted += 1
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
                            jobTimeoutMs: Int64(configuration.jobTimeout.milliseconds))
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
