import Foundation

/// Continuous batching over one `LlamaRunner`: every step runs one token of each decoding
/// sequence plus a chunk of the prompts of sequences that have just joined, so all of them share
/// each read of the weights. Sequences join and leave between steps; cancellation is honoured
/// between tokens.
///
/// The forward pass is CPU work that blocks; it runs on the scheduler's own thread, never on the
/// Swift concurrency pool.
public final class BatchScheduler: @unchecked Sendable {
    // @unchecked Sendable: `waiting` and `stopping` are guarded by `condition`; the runner, the
    // logits buffer and the active list belong to the scheduler thread alone.

    public let model: LlamaModel
    /// Most sequences decoded together.
    public let maxBatch: Int
    private let runner: LlamaRunner
    private let condition = NSCondition()
    private var waiting: [BatchSequence] = []
    private var stopping = false
    private var thread: Thread?
    private let logits: UnsafeMutablePointer<Float>
    private var active: [BatchSequence] = []
    private var stepRows: [LlamaRunner.Row] = []
    private var logitOwners: [BatchSequence] = []

    /// - Parameters:
    ///   - maxBatch: most sequences in a step (they also share the step's row budget with prompts).
    ///   - maxRows: rows per forward step (decode tokens plus prompt tokens); at least `maxBatch`.
    ///   - threads: threads for the forward pass.
    ///   - kernels: int8 or float matrix kernels (default: `KernelSet.preferred`).
    public init(model: LlamaModel, maxBatch: Int = 16, maxRows: Int = 64,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount, kernels: KernelSet = .preferred) {
        self.model = model
        self.maxBatch = max(1, maxBatch)
        runner = LlamaRunner(model: model, maxRows: max(maxRows, self.maxBatch), threads: threads, kernels: kernels)
        logits = .allocate(capacity: runner.maxRows * model.configuration.vocabularySize)
    }

    deinit {
        logits.deallocate()
    }

    /// Adds a sequence; it joins the batch at the next step with room. Starts the scheduler
    /// thread on first use.
    public func submit(_ sequence: BatchSequence) {
        condition.lock()
        waiting.append(sequence)
        if thread == nil {
            // The thread keeps the scheduler alive until `shutdown()` ends its loop.
            let t = Thread { self.loop() }
            t.name = "levee-batch-scheduler"
            t.stackSize = 1 << 20
            thread = t
            t.start()
        }
        condition.signal()
        condition.unlock()
    }

    /// Stops the scheduler thread after the current step; sequences still queued or running
    /// finish as cancelled. Call before releasing the scheduler.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && active.isEmpty && !stopping { condition.wait() }
            if stopping {
                let left = waiting
                waiting.removeAll()
                condition.unlock()
                for s in left + active { finish(s, .cancelled) }
                active.removeAll()
                return
            }
            while active.count < maxBatch && !waiting.isEmpty {
                let s = waiting.removeFirst()
                s.admittedAt = DispatchTime.now().uptimeNanoseconds
                active.append(s)
            }
            condition.unlock()
            step()
        }
    }

    /// One forward step over every active sequence, then sampling and bookkeeping.
    private func step() {
        // Sequences cancelled since the last step leave before any work is spent on them.
        active.removeAll { s in
            guard s.isCancelled else { return false }
            finish(s, .cancelled)
            return true
        }
        guard !active.isEmpty else { return }

        let context = model.configuration.contextLength
        stepRows.removeAll(keepingCapacity: true)
        logitOwners.removeAll(keepingCapacity: true)
        // Decoding sequences first: one row each.
        for s in active where s.prefilled == s.prompt.count {
            stepRows.append(.init(token: Int(s.history.last!), cache: s.cache!, wantsLogits: true))
            logitOwners.append(s)
        }
        // Then prompt chunks, in arrival order, while the row budget lasts.
        var budget = runner.maxRows - stepRows.count
        for s in active where s.prefilled < s.prompt.count && budget > 0 {
            if s.cache == nil { s.cache = model.makeCache() }
            let take = min(budget, s.prompt.count - s.prefilled)
            for i in s.prefilled..<s.prefilled + take {
                let last = i == s.prompt.count - 1
                stepRows.append(.init(token: Int(s.prompt[i]), cache: s.cache!, wantsLogits: last))
                if last { logitOwners.append(s) }
            }
            s.prefilled += take
            budget -= take
        }
        guard !stepRows.isEmpty else { return }
        runner.step(stepRows, logits: logits)

        let vocab = model.configuration.vocabularySize
        var leaving: [ObjectIdentifier: FinishReason] = [:]
        for (i, s) in logitOwners.enumerated() {
            let row = UnsafeMutableBufferPointer(start: logits + i * vocab, count: vocab)
            let token = s.history.withUnsafeBufferPointer { s.sampler.sample(logits: row, history: $0) }
            s.history.append(token)
            s.generated.append(token)
            if s.firstTokenAt == nil { s.firstTokenAt = DispatchTime.now().uptimeNanoseconds }
            switch s.onToken(token) {
            case .finish(let reason):
                leaving[ObjectIdentifier(s)] = reason
            case .proceed:
                if s.generated.count >= s.maxTokens || s.history.count >= context {
                    leaving[ObjectIdentifier(s)] = .length
                }
            }
        }
        if !leaving.isEmpty {
            active.removeAll { s in
                guard let reason = leaving[ObjectIdentifier(s)] else { return false }
                finish(s, reason)
                return true
            }
        }
    }

    private func finish(_ s: BatchSequence, _ reason: FinishReason) {
        let outcome = BatchSequence.Outcome(
            reason: reason, promptTokens: s.prompt.count, generated: s.generated,
            admittedAt: s.admittedAt, firstTokenAt: s.firstTokenAt,
            finishedAt: DispatchTime.now().uptimeNanoseconds)
        s.cache = nil // the KV memory goes with the sequence
        s.onFinish(outcome)
    }
}
