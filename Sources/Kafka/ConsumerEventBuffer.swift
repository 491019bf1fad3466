import Dispatch
import Foundation
import Synchronization

/// Something the consumer delivers, in order.
public enum KafkaConsumerEvent: Sendable {
    /// A record.
    case message(KafkaMessage)
    /// The group gave this consumer partitions (incrementally, under the cooperative protocol).
    case partitionsAssigned([TopicPartition])
    /// Partitions were taken away (`lost` when the session timed out rather than a clean
    /// rebalance). Buffered messages of these partitions were discarded.
    case partitionsRevoked([TopicPartition], lost: Bool)
    /// The end of a partition was reached (only with `enable.partition.eof=true`).
    case partitionEnd(TopicPartitionOffset)
    /// A non-fatal error (e.g. a subscribed topic that does not exist, a broker down, a failed
    /// async commit). Consumption continues; librdkafka retries on its own.
    case error(KafkaError)
}

/// Counters about the consumer's bounded buffer.
public struct ConsumerBufferStatistics: Sendable, Hashable {
    /// Messages buffered right now.
    public var bufferedMessages: Int
    /// The most messages ever buffered at once (stays at or below ``hardLimit``).
    public var maxBufferedMessages: Int
    /// How many times the assigned partitions were paused because the buffer was full.
    public var backpressurePauses: Int
    /// The buffer's capacity in messages: partitions are paused when it is reached.
    public var capacity: Int
    /// What librdkafka had already fetched still arrives after a pause, into room above the
    /// capacity, up to this many messages; only past it are those records dropped and fetched
    /// again (a seek, which costs a stall of about a second on librdkafka 2.0.2).
    public var hardLimit: Int = 0
    /// Pauses that had to drop prefetched records because the hard limit was reached.
    public var overflowSeeks: Int = 0
    /// Error events dropped because more than 100 were waiting unread.
    public var droppedErrors: Int
}

/// The bounded hand-off between the poll thread (producer side) and the task iterating the
/// consumer (consumer side). Only messages count toward the capacity; group events always fit.
final class ConsumerEventBuffer: Sendable {
    struct State {
        var items: [KafkaConsumerEvent] = []
        var head = 0
        var messageCount = 0
        var maxMessageCount = 0
        var pauses = 0
        var pausedForBackpressure = false
        /// The current pause already sought back (dropped librdkafka's prefetched records).
        var droppedAtPause = false
        var overflowSeeks = 0
        var waiter: CheckedContinuation<Result<KafkaConsumerEvent?, KafkaError>, Never>?
        var finished = false
        var terminalError: KafkaError?
        /// The poll thread is waiting (briefly) for room; the reader signals `room` when it makes some.
        var pollThreadWaiting = false
        /// Error events waiting to be read, and those dropped because too many were waiting.
        var errorCount = 0
        var droppedErrors = 0

        /// Whether the poll thread must be woken now that a record was taken; clears the flag.
        mutating func takeRoomWakeUp(capacity: Int) -> Bool {
            guard pollThreadWaiting, messageCount < capacity else { return false }
            pollThreadWaiting = false
            return true
        }

        mutating func popFirst() -> KafkaConsumerEvent? {
            guard head < items.count else { return nil }
            let item = items[head]
            head += 1
            if head > 1024, head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            if case .message = item { messageCount -= 1 }
            if case .error = item { errorCount -= 1 }
            return item
        }
    }

    enum BackpressureAction: Equatable {
        case none
        /// Stop fetching; records already fetched may still arrive (up to the hard limit).
        case pause
        /// Stop fetching and drop what was prefetched (seek back): the hard limit was reached.
        case pauseAndDrop
        case resume
    }

    /// Flow control. A pause is not free: on librdkafka 2.0.2 the fetcher of a paused-then-
    /// resumed partition that was sought back waits about a second before fetching again (seen
    /// on the embedded cluster), so a worker fed by a live stream received about one buffer per
    /// second. Now the buffer pauses at `capacity` but lets what librdkafka already fetched
    /// arrive (up to `hardLimit`), seeks back only past that, and resumes early — at the
    /// low-water mark, while the reader still has records — so fetching restarts before the
    /// reader runs dry. `LEVEE_CONSUMER_FLOW=legacy` restores the earlier policy (pause and seek
    /// at `capacity`, resume at half) for side-by-side benchmarks.
    struct FlowPolicy: Sendable {
        var hardLimit: Int
        var lowWater: Int
        var dropOnPause: Bool

        init(capacity: Int, legacy: Bool = FlowPolicy.legacyFromEnvironment) {
            if legacy {
                hardLimit = capacity
                lowWater = capacity / 2
                dropOnPause = true
            } else {
                hardLimit = capacity + max(capacity, 1024)
                lowWater = capacity * 3 / 4
                dropOnPause = false
            }
        }

        static let legacyFromEnvironment = ProcessInfo.processInfo.environment["LEVEE_CONSUMER_FLOW"] == "legacy"
    }

    /// At most this many unread error events are kept.
    static let maxPendingErrors = 100

    let capacity: Int
    let policy: FlowPolicy
    let state = Mutex(State())
    private let room = DispatchSemaphore(value: 0)
    /// Called (outside the lock) when the buffer drained enough to resume, to wake the poll thread.
    let onDrained: @Sendable () -> Void

    init(capacity: Int, policy: FlowPolicy? = nil, onDrained: @escaping @Sendable () -> Void) {
        self.capacity = capacity
        self.policy = policy ?? FlowPolicy(capacity: capacity)
        self.onDrained = onDrained
    }

    /// Adds an event (poll thread). Hands it straight to a waiting reader when there is one.
    func push(_ event: KafkaConsumerEvent) {
        let waiter = state.withLock { s -> CheckedContinuation<Result<KafkaConsumerEvent?, KafkaError>, Never>? in
            if s.finished { return nil }
            if let waiter = s.waiter, s.head >= s.items.count {
                s.waiter = nil
                return waiter
            }
            if case .error = event {
                // Errors repeat while a broker is down; a reader that is not reading must not make
                // them pile up. Keep the first ones and count the rest.
                if s.errorCount >= Self.maxPendingErrors {
                    s.droppedErrors += 1
                    return nil
                }
                s.errorCount += 1
            }
            s.items.append(event)
            if case .message = event {
                s.messageCount += 1
                s.maxMessageCount = max(s.maxMessageCount, s.messageCount)
            }
            return nil
        }
        waiter?.resume(returning: .success(event))
    }

    /// Discards buffered messages and end-of-partition events of `partitions` (they were revoked or
    /// sought elsewhere).
    func discardMessages(of partitions: Set<TopicPartition>) {
        guard !partitions.isEmpty else { return }
        state.withLock { s in
            var kept: [KafkaConsumerEvent] = []
            kept.reserveCapacity(s.items.count - s.head)
            var count = 0
            var errors = 0
            for item in s.items[s.head...] {
                if case .error = item { errors += 1 }
                if case .message(let message) = item {
                    if partitions.contains(message.topicPartition) { continue }
                    count += 1
                }
                // An end-of-partition reached from the old position says nothing about the new
                // one (a reader that seeks back from near the end would take it as "no records").
                if case .partitionEnd(let end) = item, partitions.contains(end.topicPartition) { continue }
                kept.append(item)
            }
            s.items = kept
            s.head = 0
            s.messageCount = count
            s.errorCount = errors
        }
        if state.withLock({ $0.takeRoomWakeUp(capacity: capacity) }) { room.signal() }
    }

    /// What the poll thread must do about back-pressure now; records the decision.
    func backpressureAction() -> BackpressureAction {
        state.withLock { s in
            if !s.pausedForBackpressure, s.messageCount >= capacity {
                s.pausedForBackpressure = true
                s.pauses += 1
                if policy.dropOnPause || s.messageCount >= policy.hardLimit {
                    s.overflowSeeks += 1
                    s.droppedAtPause = true
                    return .pauseAndDrop
                }
                return .pause
            }
            if s.pausedForBackpressure, !s.droppedAtPause, s.messageCount >= policy.hardLimit {
                // Paused, but prefetched records kept coming: drop the rest now.
                s.overflowSeeks += 1
                s.droppedAtPause = true
                return .pauseAndDrop
            }
            if s.pausedForBackpressure, s.messageCount <= policy.lowWater {
                s.pausedForBackpressure = false
                s.droppedAtPause = false
                return .resume
            }
            return .none
        }
    }

    var isPausedForBackpressure: Bool { state.withLock { $0.pausedForBackpressure } }

    /// Poll thread: when the buffer is full, waits up to `timeout` for the reader to make room.
    /// A reader that keeps up frees a slot within microseconds, so the costly pause (which
    /// discards librdkafka's prefetched records and refetches them later) is left for readers
    /// that are really slow. Returns whether there is room now.
    func waitForRoom(timeout: DispatchTimeInterval) -> Bool {
        let full = state.withLock { s in
            guard s.messageCount >= capacity, !s.pausedForBackpressure, !s.finished else { return false }
            s.pollThreadWaiting = true
            return true
        }
        guard full else { return true }
        _ = room.wait(timeout: .now() + timeout)
        return state.withLock { s in
            s.pollThreadWaiting = false
            return s.messageCount < capacity
        }
    }

    /// Ends the stream; a reader gets `error` (thrown) or the end of the sequence.
    func finish(error: KafkaError? = nil) {
        let waiter = state.withLock { s -> CheckedContinuation<Result<KafkaConsumerEvent?, KafkaError>, Never>? in
            if s.finished { return nil }
            s.finished = true
            s.terminalError = error
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: error.map { .failure($0) } ?? .success(nil))
    }

    /// The next event, waiting while the buffer is empty. `nil` at the end or when the task is
    /// cancelled. Only one reader at a time.
    func next() async throws(KafkaError) -> KafkaConsumerEvent? {
        enum Immediate { case event(KafkaConsumerEvent, drained: Bool, room: Bool), end(KafkaError?), wait }
        let immediate = state.withLock { s -> Immediate in
            if let event = s.popFirst() {
                return .event(event, drained: s.pausedForBackpressure && s.messageCount <= policy.lowWater, room: s.takeRoomWakeUp(capacity: capacity))
            }
            if s.finished { return .end(s.terminalError) }
            return .wait
        }
        switch immediate {
        case .event(let event, let drained, let room):
            if room { self.room.signal() }
            if drained { onDrained() }
            return event
        case .end(let error):
            if let error { throw error }
            return nil
        case .wait:
            break
        }
        if Task.isCancelled { return nil }
        if isPausedForBackpressure { onDrained() }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<KafkaConsumerEvent?, KafkaError>, Never>) in
                let resumeNow = state.withLock { s -> Result<KafkaConsumerEvent?, KafkaError>? in
                    if let event = s.popFirst() {
                        if s.takeRoomWakeUp(capacity: capacity) { room.signal() }
                        return .success(event)
                    }
                    if s.finished { return s.terminalError.map { .failure($0) } ?? .success(nil) }
                    if Task.isCancelled { return .success(nil) }
                    if s.waiter != nil {
                        return .failure(KafkaError(kind: .state, message: "another task is already iterating this consumer; only one may at a time"))
                    }
                    s.waiter = continuation
                    return nil
                }
                if let resumeNow { continuation.resume(returning: resumeNow) }
            }
        } onCancel: {
            let waiter = state.withLock { s in
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: .success(nil))
        }
        return try result.get()
    }

    var statistics: ConsumerBufferStatistics {
        state.withLock {
            ConsumerBufferStatistics(
                bufferedMessages: $0.messageCount, maxBufferedMessages: $0.maxMessageCount,
                backpressurePauses: $0.pauses, capacity: capacity, hardLimit: policy.hardLimit,
                overflowSeeks: $0.overflowSeeks, droppedErrors: $0.droppedErrors)
        }
    }
}
