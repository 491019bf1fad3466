import Foundation
import Synchronization

/// Runs the data-parallel parts of the forward pass (row chunks of matrix products, attention
/// heads) on `threadCount` threads: the caller plus `threadCount - 1` persistent workers.
///
/// A decode step has ~150 parallel regions of a few tens of microseconds each. Two hand-offs are
/// implemented: persistent workers that spin briefly on an atomic generation counter before
/// sleeping on a condition (the default), and DispatchQueue.concurrentPerform
/// (`LEVEE_THREAD_POOL=dispatch`). Measured on the 2-core machine while quiet: single stream
/// 75–89 vs 45–81 tokens/s, batch 8 182–215 vs 113–197; under heavy load from other builds the
/// two were even. Waiters yield rather than spin once a region's stragglers are descheduled.
public final class ThreadPool: @unchecked Sendable {
    // @unchecked Sendable: `body` and `count` are written by the caller only while no region is
    // running (before the release-ordered generation bump) and read by workers only after they
    // observe that bump (acquire); `parallelFor` returns only after every worker has finished
    // with them (`busy` back to zero).

    public let threadCount: Int
    private let generation = Atomic<Int>(0)
    private let next = Atomic<Int>(0)
    private let busy = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stop = Atomic<Bool>(false)
    private let condition = NSCondition()
    private var count = 0
    private var body: ((Int) -> Void)?
    private var threads: [Thread] = []

    /// `LEVEE_THREAD_POOL=dispatch` selects DispatchQueue.concurrentPerform instead of the workers.
    public static let useDispatch = ProcessInfo.processInfo.environment["LEVEE_THREAD_POOL"] == "dispatch"

    /// Spin iterations before a worker sleeps (about 20–50 µs).
    private static let spinLimit = 20_000

    /// Whether this pool hands regions to Dispatch rather than to its own workers.
    public let usesDispatch: Bool

    /// - Parameter spinning: persistent spinning workers instead of Dispatch (default: from
    ///   `LEVEE_THREAD_POOL`).
    public init(threads: Int, spinning: Bool = !ThreadPool.useDispatch) {
        threadCount = max(1, threads)
        usesDispatch = !spinning
        for i in 1..<(usesDispatch ? 1 : threadCount) {
            let t = Thread { [self] in self.work() }
            t.name = "levee-pool-\(i)"
            self.threads.append(t)
            t.start()
        }
    }

    /// Stops the workers. Called by the owner (`LlamaRunner.deinit`); the workers hold the pool
    /// strongly until then.
    public func shutdown() {
        stop.store(true, ordering: .releasing)
        condition.lock()
        generation.wrappingAdd(1, ordering: .releasing)
        condition.broadcast()
        condition.unlock()
    }

    /// Calls `body(i)` for i in 0..<count, spread over the threads; returns when all are done.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if threadCount == 1 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        if usesDispatch {
            withoutActuallyEscaping(body) { body in
                let shared = UnsafeSendable(body)
                DispatchQueue.concurrentPerform(iterations: count) { i in shared.value(i) }
            }
            return
        }
        withoutActuallyEscaping(body) { body in
            self.body = body
            self.count = count
            next.store(0, ordering: .relaxed)
            busy.store(threadCount - 1, ordering: .relaxed)
            // Sequentially consistent with the worker's (sleepers += 1; load generation): at
            // least one side sees the other's write, so a worker never sleeps through a bump.
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock(); condition.broadcast(); condition.unlock()
            }
            runItems()
            // Wait for workers still inside an item (they finish within one item's time).
            // Yield after a while: on a busy machine the worker may be descheduled, and spinning
            // would take the very core it needs.
            var spins = 0
            while busy.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins < 2_000 { spinPause() } else { sched_yield() }
            }
            self.body = nil
        }
    }

    private func runItems() {
        let body = self.body!, count = self.count
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }

    /// Worker loop. `seen` starts at 0, the generation at creation, not at the time the thread
    /// happens to start: a region begun before the thread ran must still count on it.
    private func work() {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                if spins < Self.spinLimit {
                    spins += 1
                    spinPause()
                    continue
                }
                condition.lock()
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                sleepers.wrappingSubtract(1, ordering: .releasing)
                condition.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if stop.load(ordering: .acquiring) { return }
            runItems()
            busy.wrappingSubtract(1, ordering: .releasing)
        }
    }

    @inline(__always)
    private func spinPause() {
        // No portable PAUSE instruction in Swift; an atomic load keeps the loop polite enough.
        _ = sleepers.load(ordering: .relaxed)
    }
}
