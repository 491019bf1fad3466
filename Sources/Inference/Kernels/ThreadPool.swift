import Dispatch

/// Runs the data-parallel parts of the forward pass (row chunks of matrix products, attention
/// heads) on `threadCount` threads. The calling thread takes part.
public final class ThreadPool: Sendable {
    public let threadCount: Int

    public init(threads: Int) {
        threadCount = max(1, threads)
    }

    /// Calls `body(i)` for i in 0..<count, spread over the threads; returns when all are done.
    public func parallelFor(_ count: Int, _ body: @Sendable (Int) -> Void) {
        if threadCount == 1 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: count) { i in body(i) }
    }
}
