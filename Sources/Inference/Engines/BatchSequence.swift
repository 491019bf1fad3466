import Foundation

/// One sequence decoded by a `BatchScheduler`: its prompt, its sampler, its KV cache, and what to
/// do with each generated token.
///
/// The scheduler thread owns all mutable state except the cancellation flag, which any thread
/// may set (it is read between tokens).
public final class BatchSequence: @unchecked Sendable {
    // @unchecked Sendable: `cancelled` is guarded by `lock`; every other mutable property is
    // touched only by the scheduler thread after `submit` hands the sequence over.

    /// What the token handler wants after a token.
    public enum Decision: Sendable {
        case proceed
        case finish(FinishReason)
    }

    /// Why and when a sequence ended, handed to `onFinish` (on the scheduler thread).
    public struct Outcome: Sendable {
        public var reason: FinishReason
        public var promptTokens: Int
        public var generated: [Int32]
        /// Scheduler clock (DispatchTime nanoseconds) at admission, first token and the end.
        public var admittedAt: UInt64
        public var firstTokenAt: UInt64?
        public var finishedAt: UInt64
    }

    public let prompt: [Int32]
    let maxTokens: Int
    var sampler: Sampler
    /// Called on the scheduler thread with each sampled token (already appended to `generated`).
    let onToken: (Int32) -> Decision
    let onFinish: (Outcome) -> Void

    // Scheduler-thread state.
    var cache: KVCache?
    var history: [Int32]
    var prefilled = 0
    var generated: [Int32] = []
    var admittedAt: UInt64 = 0
    var firstTokenAt: UInt64?

    private let lock = NSLock()
    private var cancelled = false

    /// - Parameters:
    ///   - prompt: token ids (at least one).
    ///   - sampler: a sampler configured for this sequence (its seed makes runs reproducible).
    ///   - maxTokens: most tokens to generate; the sequence finishes with `.length` after them.
    ///   - onToken: decides after each token whether to go on (stop strings, end of turn…).
    ///   - onFinish: called exactly once, when the sequence leaves the batch.
    public init(prompt: [Int32], sampler: Sampler, maxTokens: Int,
                onToken: @escaping (Int32) -> Decision, onFinish: @escaping (Outcome) -> Void) {
        precondition(!prompt.isEmpty, "a sequence needs at least one prompt token")
        self.prompt = prompt
        self.sampler = sampler
        self.maxTokens = max(1, maxTokens)
        self.onToken = onToken
        self.onFinish = onFinish
        history = prompt
        history.reserveCapacity(prompt.count + min(maxTokens, 4096))
    }

    /// Asks the scheduler to stop this sequence before its next token (finish reason `.cancelled`).
    public func cancel() {
        lock.lock(); cancelled = true; lock.unlock()
    }

    public var isCancelled: Bool {
        lock.lock(); defer { lock.unlock() }
        return cancelled
    }
}
