import Synchronization

/// A one-shot event tasks can wait for: fired once (e.g. "shut down now"), after which every
/// current and future waiter returns at once. Waiting ends early if the waiting task is cancelled.
final class OneShotSignal: Sendable {
    private struct State {
        var fired = false
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    var isFired: Bool { state.withLock { $0.fired } }

    func fire() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard !s.fired else { return [] }
            s.fired = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when fired, or when the calling task is cancelled.
    func wait() async {
        let id = state.withLock { s -> Int in s.nextID += 1; return s.nextID }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.fired || Task.isCancelled { return true }
                    s.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// A bounded first-in-first-out hand-off between one producer task and several consumer tasks.
/// `put` waits while the queue is full (that is the worker's back-pressure: the reader stops
/// taking records, the consumer's buffer fills and pauses the partitions). After `close`, `take`
/// drains what is left and then returns nil.
final class BoundedQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var head = 0
        var closed = false
        var takers: [CheckedContinuation<Element?, Never>] = []
        var putters: [CheckedContinuation<Void, Never>] = []
        var count: Int { items.count - head }
        mutating func pop() -> Element? {
            guard head < items.count else { return nil }
            let item = items[head]
            head += 1
            if head > 64, head * 2 > items.count { items.removeFirst(head); head = 0 }
            return item
        }
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { state.withLock { $0.count } }

    func put(_ item: Element) async {
        while true {
            // (done, a waiting taker to hand the item to)
            let (done, taker) = state.withLock { s -> (Bool, CheckedContinuation<Element?, Never>?) in
                if !s.takers.isEmpty { return (true, s.takers.removeFirst()) }
                if s.count < capacity || s.closed { s.items.append(item); return (true, nil) }
                return (false, nil)
            }
            if done {
                taker?.resume(returning: item)
                return
            } else {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { s -> Bool in
                        if s.count < capacity || s.closed { return true }
                        s.putters.append(c)
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            }
        }
    }

    func take() async -> Element? {
        await withCheckedContinuation { (c: CheckedContinuation<Element?, Never>) in
            let (item, resumeNow, putter) = state.withLock { s -> (Element?, Bool, CheckedContinuation<Void, Never>?) in
                if let item = s.pop() {
                    let putter = s.putters.isEmpty ? nil : s.putters.removeFirst()
                    return (item, true, putter)
                }
                if s.closed { return (nil, true, nil) }
                s.takers.append(c)
                return (nil, false, nil)
            }
            putter?.resume()
            if resumeNow { c.resume(returning: item) }
        }
    }

    /// Removes and returns everything not yet taken (for handing jobs back on shutdown).
    func drainRemaining() -> [Element] {
        let (items, putters) = state.withLock { s -> ([Element], [CheckedContinuation<Void, Never>]) in
            let items = Array(s.items[s.head...])
            s.items = []
            s.head = 0
            defer { s.putters = [] }
            return (items, s.putters)
        }
        for p in putters { p.resume() }
        return items
    }

    func close() {
        let (takers, putters) = state.withLock { s -> ([CheckedContinuation<Element?, Never>], [CheckedContinuation<Void, Never>]) in
            s.closed = true
            defer { s.takers = []; s.putters = [] }
            return (s.takers, s.putters)
        }
        for t in takers { t.resume(returning: nil) }
        for p in putters { p.resume() }
    }
}
