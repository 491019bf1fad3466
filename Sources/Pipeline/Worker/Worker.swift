import Foundation
import Inference
import Kafka
import Synchronization

/// A Levee worker: a member of the workers' consumer group that runs jobs on an engine and
/// commits exactly one outcome per job.
///
/// Tasks inside `run()` (one structured task group):
/// - the reader takes records from the group consumer, decodes them and hands jobs to the runners
///   through a bounded queue (full queue → the reader waits → the consumer's buffer fills → its
///   partitions are paused, while its poll thread keeps the group session alive);
/// - `concurrency` runners run jobs on the engine (the local engine batches concurrent calls);
/// - the committer commits finished outcomes every `commitInterval`: in exactly-once mode, the
///   results, trace events, retries, dead letters and the input offsets go in one transaction;
///   offsets advance only over contiguous finished jobs (`OffsetTracker`);
/// - the index follows the results and control topics: job ids already finished (duplicates are
///   skipped) and cancellations;
/// - the delay loop releases retried jobs when their `not_before` comes; the heartbeat loop
///   publishes the worker's state to the workers topic.
///
/// `shutdown()` is the graceful path: stop reading, hand back queued jobs, let running jobs finish
/// (up to `drainTimeout`), commit, leave the group. Cancelling the task that runs `run()` is the
/// crash path: nothing more is committed.
public final class Worker: Sendable {
    public let configuration: WorkerConfiguration
    public let connection: KafkaConnection
    public let engine: any InferenceEngine
    public let identity: WorkerIdentity
    /// Prometheus metrics, served by `levee worker --http`.
    public let metrics = WorkerMetrics()

    let state = Mutex(WorkerRuntimeState())
    let stopRequested = OneShotSignal()
    let drained = OneShotSignal()
    let finalCommitDone = OneShotSignal()
    let startedAt = Timestamp.now()

    public init(connection: KafkaConnection, configuration: WorkerConfiguration, engine: any InferenceEngine) {
        self.connection = connection
        self.configuration = configuration
        self.engine = engine
        self.identity = WorkerIdentity(id: configuration.workerID, host: ProcessInfo.processInfo.hostName,
                                       pid: ProcessInfo.processInfo.processIdentifier)
    }

    /// Counters so far.
    public var statistics: WorkerStatistics { state.withLock { $0.statistics } }

    /// Partitions of the job and retry topics this worker holds now.
    public var assignedPartitions: [TopicPartitionRef] { state.withLock { $0.epochs.keys.sorted() } }

    /// Whether the worker has joined the group and holds partitions (for `/readyz`).
    public var isReady: Bool { state.withLock { $0.ready && !$0.epochs.isEmpty } }

    /// Why the worker is not ready to take jobs (empty when ready), for `/readyz`.
    public var readiness: Readiness {
        state.withLock { s in
            var reasons: [String] = []
            if !s.ready { reasons.append("not yet in the consumer group (brokers unreachable or the group still forming)") }
            else if s.epochs.isEmpty { reasons.append("no partitions assigned (more workers than partitions?)") }
            if s.draining { reasons.append("draining for shutdown") }
            if let since = s.commitFailingSinceInstant, ContinuousClock.now - since >= configuration.commitFailureGrace {
                reasons.append("commits failing for \(Int((ContinuousClock.now - since).milliseconds / 1000)) s (\(s.commitFailures) tries): "
                               + (s.lastCommitError ?? "?"))
            }
            return Readiness(reasons: reasons)
        }
    }

    /// Asks the worker to stop gracefully; `run()` returns once it has committed and left the group.
    public func shutdown() { stopRequested.fire() }

    /// Runs until `shutdown()` (graceful) or until the calling task is cancelled (no more commits).
    /// Throws when the brokers cannot be used (e.g. the producer was fenced by a newer instance
    /// with the same worker id): a supervisor should restart the worker.
    public func run() async throws {
        let layout = connection.layout
        let admin = try KafkaAdmin(configuration: connection.configuration())
        let resultPartitions = try await admin.describeTopic(layout.results).partitionCount
        let controlPartitions = try await admin.describeTopic(layout.control).partitionCount

        let plain = try KafkaProducer(configuration: connection.configuration(
            configuration.producerProperties.merging(["linger.ms": "5"]) { a, _ in a }))
        var transactional: TransactionalProducer?
        if configuration.delivery == .exactlyOnce {
            let producer = try TransactionalProducer(configuration: connection.configuration(
                configuration.producerProperties.merging([
                    "transactional.id": "levee-worker-\(configuration.workerID)",
                    "transaction.timeout.ms": String(Int(configuration.transactionTimeout.milliseconds)),
                    "linger.ms": "5",
                ]) { a, _ in a }))
            try await producer.initTransactions()
            transactional = producer
        }
        let consumer = try KafkaConsumer(
            configuration: connection.configuration(configuration.consumerProperties.merging([
                "group.id": configuration.groupID,
                "group.instance.id": configuration.workerID,
                "isolation.level": "read_committed",
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
            ]) { a, _ in a }),
            bufferCapacity: max(64, configuration.concurrency * 4),
            onRevoke: { [self] revocation in self.revoke(revocation.partitions.map { TopicPartitionRef(topic: $0.topic, partition: $0.partition) }) })
        let index = try KafkaConsumer(
            configuration: connection.configuration(["enable.partition.eof": "true", "isolation.level": "read_committed"]),
            bufferCapacity: 10_000)
        let since = Timestamp.now().adding(milliseconds: -Int64(configuration.duplicateWindow.milliseconds))
        let indexed = (0..<resultPartitions).map { TopicPartition(layout.results, Int32($0)) }
            + (0..<controlPartitions).map { TopicPartition(layout.control, Int32($0)) }
        try index.assign(try await PartitionScan.startOffsets(index, indexed, since: since, backfill: 100_000))
        state.withLock { $0.resultPartitions = resultPartitions }
        // Until the brokers say how large each output topic's records may be, the producer's own
        // bound holds (DescribeConfigs may be slow or, on the embedded cluster, never answered).
        let producerProperties = connection.properties.merging(configuration.producerProperties) { $1 }
        state.withLock { $0.recordLimits = RecordLimits(producerProperties: producerProperties) }

        try consumer.subscribe([layout.jobs, layout.retry])
        let queue = BoundedQueue<WorkItem>(capacity: configuration.concurrency)
        let context = RunContext(plain: plain, transactional: transactional, consumer: consumer, queue: queue)
        log(.init(message: "worker \(configuration.workerID) started", fields: [
            "engine": engine.name, "model": engine.modelID, "concurrency": String(configuration.concurrency),
            "delivery": configuration.delivery.rawValue, "group": configuration.groupID]))

        var runError: (any Error)?
        do {
            // Cancellation (the crash path) must also free runners waiting on the queue.
            try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.indexLoop(index) }
                group.addTask { await self.readRecordLimits(admin, producerProperties: producerProperties) }
                group.addTask { await self.heartbeatLoop(context) }
                group.addTask { await self.delayLoop(context) }
                for _ in 0..<configuration.concurrency {
                    group.addTask { await self.runnerLoop(context) }
                }
                group.addTask { try await self.commitLoop(context) }
                group.addTask { try await self.readAndDrain(context) }
                // Everything else ends on its own once the final commit is done (or on cancellation).
                group.addTask {
                    await self.finalCommitDone.wait()
                    throw WorkerStop.finished
                }
                do {
                    while try await group.next() != nil {}
                } catch WorkerStop.finished {
                    group.cancelAll()
                }
            }
            } onCancel: {
                queue.close()
            }
        } catch {
            runError = error
        }
        let crashed = Task.isCancelled
        index.requestStopSoon()
        if !crashed {
            await heartbeat(context, state: .stopped)
            await consumer.close()
            try? await plain.close(timeout: .seconds(5))
            await transactional?.close()
            log(.init(message: "worker \(configuration.workerID) stopped", fields: statisticsFields()))
        }
        if let runError, !(runError is CancellationError) { throw runError }
    }

    /// Learns each output topic's `max.message.bytes` (see `RecordLimits`).
    func readRecordLimits(_ admin: KafkaAdmin, producerProperties: [String: String]) async {
        let layout = connection.layout
        let limits = await RecordLimits.read(admin, producerProperties: producerProperties,
                                             topics: [layout.results, layout.trace, layout.retry, layout.deadLetters])
        state.withLock { $0.recordLimits = limits; $0.recordLimitsAsked = true }
        log(.init(message: "record size limits", fields: [
            "producer_max_bytes": String(limits.producerMaxBytes),
            "dead_letters": String(limits.limit(for: layout.deadLetters)), "results": String(limits.limit(for: layout.results)),
            "topics_described": String(limits.topicMaxBytes.count)]))
    }

    // MARK: - Reading

    /// Reads until shutdown, then hands back what was not started, waits for running jobs and
    /// asks the committer for the final commit.
    func readAndDrain(_ context: RunContext) async throws {
        try await withThrowingTaskGroup(of: Void.self) { inner in
            inner.addTask { try await self.readLoop(context) }
            inner.addTask { await self.stopRequested.wait() }
            _ = try await inner.next()
            inner.cancelAll()
        }
        if Task.isCancelled { return }
        stopRequested.fire()
        state.withLock { $0.draining = true }
        // Jobs not started go back to the group: their offsets are not committed, so the next
        // owner of the partition reads them again.
        let queued = context.queue.drainRemaining()
        let delayed = state.withLock { s -> [WorkItem] in defer { s.delayed = [] }; return s.delayed }
        for item in queued + delayed { await handBack(item, context) }
        context.queue.close()
        // Running jobs finish, up to the drain timeout; then they are stopped and handed back.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.drained.wait() }
            group.addTask { try? await Task.sleep(for: self.configuration.drainTimeout) }
            _ = await group.next()
            group.cancelAll()
        }
        let stillRunning = state.withLock { Array($0.running.values) }
        for job in stillRunning { job.stop(.handedBack) }
        await drained.wait()
        state.withLock { $0.finalCommitRequested = true }
    }

    func readLoop(_ context: RunContext) async throws {
        for try await event in context.consumer.events {
            // The consumer's event buffer hands out what it holds even to a cancelled reader, and
            // keeps filling while partitions are assigned: without this check a worker told to stop
            // went on taking jobs (found by `levee chaos`: SIGTERMed workers never finished draining).
            if stopping { return }
            switch event {
            case .partitionsAssigned(let partitions):
                await assign(partitions.map { TopicPartitionRef(topic: $0.topic, partition: $0.partition) }, context)
            case .partitionsRevoked(let partitions, _):
                revoke(partitions.map { TopicPartitionRef(topic: $0.topic, partition: $0.partition) })
            case .message(let message):
                try await handle(message, context)
            case .error(let error):
                log(.init(level: "warning", message: "consumer: \(error)", fields: [:]))
            case .partitionEnd:
                break
            }
        }
    }

    func assign(_ partitions: [TopicPartitionRef], _ context: RunContext) async {
        let generation = context.consumer.generationID
        // The duplicate check must know every result committed before this assignment: note
        // where each results partition ends now, and process no job until the index got there.
        var barrier: [Int32: Int64] = [:]
        let (resultTopic, count) = (connection.layout.results, state.withLock { $0.resultPartitions })
        for p in 0..<count {
            if let marks = try? await context.consumer.watermarks(TopicPartition(resultTopic, Int32(p))) {
                barrier[Int32(p)] = marks.high
            }
        }
        state.withLock { s in
            for p in partitions {
                s.nextEpoch += 1
                s.epochs[p] = s.nextEpoch
            }
            s.generation = generation
            s.ready = true
            s.statistics.rebalances += 1
            metrics.rebalances.labels(["assigned"]).increment()
            metrics.assignedPartitions.set(Double(s.epochs.count))
            for (p, end) in barrier { s.indexBarrier[p] = max(s.indexBarrier[p] ?? 0, end) }
            s.barrierSetAt = .now
        }
        log(.init(message: "assigned \(partitions.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ", "))",
                  fields: ["generation": generation.map(String.init) ?? "?"]))
    }

    /// Partitions taken away: drop their uncommitted outcomes and stop their running jobs; the
    /// new owner reads them again from the committed offsets. Runs on the consumer's poll thread
    /// (before the partitions go) and again from the event stream; the second call finds nothing.
    func revoke(_ partitions: [TopicPartitionRef]) {
        // A commit in progress may still include these partitions' offsets: let it finish first,
        // so what the next owner reads is final. This blocks librdkafka's rebalance, so it waits
        // on a semaphore the committer signals when the commit ends (no polling), bounded.
        let deadline = DispatchTime.now() + .seconds(10)
        while let commitEnded = state.withLock({ s -> DispatchSemaphore? in
            guard s.committing else { return nil }
            let semaphore = DispatchSemaphore(value: 0)
            s.commitEndWaiters.append(semaphore)
            return semaphore
        }) {
            if commitEnded.wait(timeout: deadline) == .timedOut {
                state.withLock { $0.commitEndWaiters.removeAll { $0 === commitEnded } }
                log(.init(level: "warning", message: "revoke: a commit still in flight after 10 s; partitions handed over without waiting for it",
                          fields: ["partitions": partitions.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ",")]))
                break
            }
        }
        let revoked = Set(partitions)
        let stopped = state.withLock { s -> [RunningJob] in
            var removed = false
            for p in partitions where s.epochs.removeValue(forKey: p) != nil {
                s.tracker.revoke(p)
                removed = true
            }
            guard removed else { return [] }
            s.pending.removeAll { revoked.contains($0.partition) }
            for item in s.delayed where revoked.contains(item.partition) { s.dequeue(item) }
            s.delayed.removeAll { revoked.contains($0.partition) }
            return s.running.values.filter { revoked.contains($0.item.partition) }
        }
        for job in stopped { job.stop(.rebalanced) }
        if !partitions.isEmpty { metrics.rebalances.labels(["revoked"]).increment() }
        if !stopped.isEmpty || !partitions.isEmpty {
            log(.init(message: "revoked \(partitions.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ", "))", fields: [:]))
        }
    }

    /// The committer calls this when a commit ends (committed, aborted or failed), after its
    /// outcomes went to `completed` or back to `pending`: wakes revoke callbacks waiting for it.
    func commitEnded() {
        for waiter in state.withLock({ $0.endCommit() }) { waiter.signal() }
    }

    func handle(_ message: KafkaMessage, _ context: RunContext) async throws {
        let partition = TopicPartitionRef(topic: message.topic, partition: message.partition)
        let accepted = state.withLock { s -> Int? in
            guard let epoch = s.epochs[partition] else { return nil }
            s.tracker.received(partition, offset: message.offset)
            s.statistics.received += 1
            return epoch
        }
        guard let epoch = accepted else { return }
        metrics.jobsReceived.increment()
        let bytes = Data(message.value ?? [])
        let receivedAt = Timestamp.now()
        switch JobEnvelope.decodeRecord(bytes, limits: configuration.limits) {
        case .failure(let reason):
            let jobID = message.keyString.flatMap(JobID.init(string:))
            let source = Source(partition: partition, offset: message.offset, epoch: epoch, generation: state.withLock { $0.generation })
            // A poison record read again (redelivered after a crash or rebalance, before its offset
            // was committed) already has its failed result: the same duplicate check as for jobs,
            // or it gets a second terminal record and a second dead letter.
            if let jobID {
                await waitForIndex()
                if stopping { return }
                if state.withLock({ $0.isDuplicate(jobID) }) {
                    state.withLock { $0.statistics.duplicatesSkipped += 1 }
                    log(.init(message: "poison record already dead-lettered; skipped", fields: ["job_id": jobID.description]))
                    finish(Outcome(jobID: jobID, source: source, records: [], status: nil, deadLettered: false), context)
                    return
                }
            }
            finish(poisonOutcome(jobID: jobID, reason: reason, original: bytes, source: source, message: message), context)
        case .success(let job):
            await waitForIndex()
            if stopping { return }
            let item = WorkItem(job: job, partition: partition, offset: message.offset, epoch: epoch,
                                generation: state.withLock { $0.generation }, receivedAt: receivedAt)
            let duplicate = state.withLock { $0.isDuplicate(job.jobID) }
            if duplicate {
                // No `received` event: the job's trace already ends in its outcome (or shows the
                // copy running here). Where committed offsets are lost (the embedded mock drops
                // transactional offsets, so every assignment re-reads its partitions from the start)
                // one event per re-read record flooded the trace topic (found by `levee chaos`).
                state.withLock { $0.statistics.duplicatesSkipped += 1 }
                log(.init(message: "duplicate of a finished or running job skipped", fields: ["job_id": job.jobID.description]))
                finish(Outcome(item: item, records: [], status: nil, isFinal: false), context)
                return
            }
            metrics.queueWaitSeconds.observe(Double(max(0, job.submittedAt.milliseconds(until: receivedAt))) / 1000)
            await emitNow(event(item, .received, durationMs: job.submittedAt.milliseconds(until: receivedAt)), context)
            if let notBefore = job.notBefore, notBefore > receivedAt {
                state.withLock { $0.delayed.append(item); $0.enqueue(item) }
                return
            }
            state.withLock { $0.enqueue(item) }
            await context.queue.put(item)
        }
    }

    /// True once shutdown began (or the run was cancelled). `waitForIndex` returns early then, so
    /// the duplicate check must not run: with an index still catching up it misses results and a
    /// second terminal record follows (found by `levee chaos`: a worker SIGTERMed right after its
    /// start dead-lettered a poison job a second time). The record is left for the next owner.
    var stopping: Bool { Task.isCancelled || stopRequested.isFired }

    /// Waits until the results index has read every result committed before the latest
    /// assignment (bounded by `indexCatchUpTimeout`).
    func waitForIndex() async {
        while true {
            let (caughtUp, since) = state.withLock { s -> (Bool, ContinuousClock.Instant) in
                (s.indexBarrier.allSatisfy { (s.indexPosition[$0.key] ?? 0) >= $0.value }, s.barrierSetAt)
            }
            if caughtUp || ContinuousClock.now - since > configuration.indexCatchUpTimeout || Task.isCancelled { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    func indexLoop(_ index: KafkaConsumer) async throws {
        let results = connection.layout.results, control = connection.layout.control
        for try await event in index.events {
            switch event {
            case .message(let message):
                if message.topic == results {
                    if let id = message.keyString.flatMap(JobID.init(string:)) {
                        state.withLock { s in
                            // A tombstone deletes the job's result (by hand, or the reconciler's
                            // repair path): the job may run again when it is re-enqueued.
                            if message.value == nil { s.completed.remove(id) } else { s.completed.insert(id) }
                            s.indexPosition[message.partition] = max(s.indexPosition[message.partition] ?? 0, message.offset + 1)
                        }
                    }
                } else if message.topic == control, let value = message.value,
                          let record = try? LeveeJSON.decode(ControlRecord.self, from: Data(value)), record.action == "cancel" {
                    let running = state.withLock { s -> RunningJob? in
                        s.cancelled.insert(record.jobID)
                        return s.running[record.jobID]
                    }
                    running?.stop(.cancelled)
                }
            case .partitionEnd(let end) where end.topic == results:
                state.withLock { s in s.indexPosition[end.partition] = max(s.indexPosition[end.partition] ?? 0, end.offset) }
            default:
                continue
            }
        }
    }

    func delayLoop(_ context: RunContext) async {
        while !Task.isCancelled && !stopRequested.isFired {
            let now = Timestamp.now()
            let due = state.withLock { s -> [WorkItem] in
                let due = s.delayed.filter { ($0.job.notBefore ?? now) <= now }
                s.delayed.removeAll { ($0.job.notBefore ?? now) <= now }
                return due
            }
            for item in due { await context.queue.put(item) }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - Running jobs

    func runnerLoop(_ context: RunContext) async {
        state.withLock { $0.runners += 1 }
        while let item = await context.queue.take() {
            await process(item, context)
        }
        let last = state.withLock { s -> Bool in s.runners -= 1; return s.runners == 0 }
        if last { drained.fire() }
    }

    func process(_ item: WorkItem, _ context: RunContext) async {
        let job = item.job
        let now = Timestamp.now()
        let stillOurs = state.withLock { s -> Bool in
            s.dequeue(item)
            return s.epochs[item.partition] == item.epoch
        }
        guard stillOurs else { return }
        if let deadline = job.deadline, deadline <= now {
            finish(terminal(item, .expired, error: JobError(.deadline, "deadline \(deadline) passed \(deadline.milliseconds(until: now)) ms before the job could run"),
                            stage: .expired), context)
            return
        }
        if state.withLock({ $0.cancelled.contains(job.jobID) }) {
            finish(terminal(item, .cancelled, error: JobError(.cancelled, "cancelled before it started"), stage: .cancelled), context)
            return
        }
        let running = RunningJob(item: item)
        state.withLock { $0.running[job.jobID] = running }
        metrics.inFlight.increment()
        defer {
            state.withLock { s in
                // A newer copy of the job (redelivered after a revoke) may have replaced this entry.
                if s.running[job.jobID] === running { s.running[job.jobID] = nil }
            }
            metrics.inFlight.decrement()
        }
        await emitNow(event(item, .inferenceStarted, model: job.model), context)
        let started = ContinuousClock.now
        let outcome = await runEngine(job, running)
        let inferenceMs = Int64((ContinuousClock.now - started).milliseconds)
        switch outcome {
        case .finished(let result):
            // A job that finished on its own counts as done even if a stop came at the last moment.
            let reason = result.finishReason == .cancelled ? (running.reason ?? .handedBack) : nil
            switch reason {
            case nil:
                let output = ResultOutput(text: result.text, finishReason: result.finishReason.rawValue,
                                          promptTokens: result.promptTokens, completionTokens: result.completionTokens)
                metrics.recordInference(seconds: Double(inferenceMs) / 1000, promptTokens: result.promptTokens,
                                        completionTokens: result.completionTokens)
                finish(succeeded(item, output, inferenceMs: inferenceMs, model: result.model), context)
                if configuration.logContent { log(.init(message: "output", fields: ["job_id": job.jobID.description, "text": result.text])) }
            case .some(.cancelled):
                finish(terminal(item, .cancelled, error: JobError(.cancelled, "cancelled after \(result.completionTokens) tokens"),
                                stage: .cancelled, inferenceMs: inferenceMs), context)
            case .some(.timedOut):
                failAttempt(item, JobError(.timeout, "attempt ran longer than \(configuration.jobTimeout)", retriable: true), inferenceMs, context)
            case .some(.rebalanced), .some(.handedBack):
                await handBack(item, context)
            }
        case .failed(let error):
            failAttempt(item, classify(error), inferenceMs, context)
        }
    }

    enum EngineOutcome: Sendable {
        case finished(GenerationResult)
        case failed(any Error)
    }

    /// Runs the engine, racing it against the job's timeout and its stop signal (cancel,
    /// rebalance, shutdown). A stopped engine returns its partial result (finish reason cancelled).
    func runEngine(_ job: JobEnvelope, _ running: RunningJob) async -> EngineOutcome {
        let request = generationRequest(job)
        let engine = self.engine
        let timeout = configuration.jobTimeout
        return await withTaskGroup(of: EngineOutcome?.self) { group in
            group.addTask {
                do { return .finished(try await engine.generate(request)) } catch { return .failed(error) }
            }
            group.addTask {
                await withTaskGroup(of: Void.self) { watch in
                    watch.addTask { try? await Task.sleep(for: timeout); running.stop(.timedOut) }
                    watch.addTask { await running.signal.wait() }
                    _ = await watch.next()
                    watch.cancelAll()
                }
                return nil
            }
            var outcome: EngineOutcome?
            while let next = await group.next() {
                if let next {
                    outcome = next
                    group.cancelAll()
                } else if !Task.isCancelled {
                    // Stop signal or timeout: cancel the engine; it returns what it has.
                    group.cancelAll()
                }
            }
            return outcome ?? .failed(CancellationError())
        }
    }

    func generationRequest(_ job: JobEnvelope) -> GenerationRequest {
        let prompt: Prompt
        if job.kind == .chat {
            prompt = .chat((job.input.messages ?? []).map { ChatMessage(role: ChatMessage.Role(rawValue: $0.role), content: $0.content) })
        } else {
            prompt = .text(job.input.prompt ?? "")
        }
        let p = job.params
        let sampling = SamplingParameters(maxTokens: p.maxTokens, temperature: Float(p.temperature), topK: p.topK, topP: Float(p.topP),
                                          repetitionPenalty: Float(p.repetitionPenalty), seed: p.seed, stop: p.stop)
        return GenerationRequest(id: job.jobID.description, prompt: prompt, sampling: sampling, model: nil)
    }

    func classify(_ error: any Error) -> JobError {
        if let error = error as? InferenceError {
            let errorClass: ErrorClass
            switch error.kind {
            case .backendUnreachable: errorClass = .backendUnreachable
            case .timeout: errorClass = .timeout
            case .outOfMemory: errorClass = .outOfMemory
            case .cancelled: errorClass = .cancelled
            case .invalidRequest, .unknownModel: errorClass = .poisonInput
            default: errorClass = .engineError
            }
            return JobError(errorClass, error.description, retriable: error.isRetriable)
        }
        return JobError(.engineError, "\(error)", retriable: false)
    }

    /// A failed attempt: retried through the retry topic while attempts remain, else failed.
    func failAttempt(_ item: WorkItem, _ error: JobError, _ inferenceMs: Int64, _ context: RunContext) {
        let job = item.job
        if error.retriable && configuration.backoff.allowsRetry(afterAttempt: job.attempt) {
            let delay = configuration.backoff.delay(afterAttempt: job.attempt)
            var retry = job
            retry.attempt += 1
            retry.notBefore = Timestamp.now().adding(milliseconds: delay)
            retry.lastError = error
            var records: [ProducerRecord] = []
            if let value = try? LeveeJSON.encode(retry) {
                records.append(ProducerRecord(topic: connection.layout.retry, key: Array(job.jobID.description.utf8), value: Array(value),
                                              headers: [KafkaHeader("traceparent", job.traceparent.description)]))
            }
            records += traceRecords([event(item, .retryScheduled, error: error, durationMs: inferenceMs, topic: connection.layout.retry,
                                           notBefore: retry.notBefore)])
            var outcome = Outcome(item: item, records: records, status: nil, isFinal: false, retried: true)
            outcome.errorClass = error.errorClass
            finish(outcome, context)
        } else {
            var final = error
            if error.retriable { final.message += " (gave up after \(job.attempt) attempts)" }
            finish(terminal(item, .failed, error: final, stage: nil, inferenceMs: inferenceMs), context)
        }
    }

    func handBack(_ item: WorkItem, _ context: RunContext) async {
        state.withLock { s in
            s.statistics.handedBack += 1
            s.dequeue(item)
        }
        await emitNow(event(item, .handedBack, detail: "worker stopping or partition revoked; the next owner runs it"), context)
    }
}

/// Thrown inside `run()` to end the task group once the final commit is done.
enum WorkerStop: Error { case finished }

extension KafkaConsumer {
    /// Closes without waiting (for the index consumer, which has no group to leave).
    func requestStopSoon() {
        Task.detached { await self.close() }
    }
}
