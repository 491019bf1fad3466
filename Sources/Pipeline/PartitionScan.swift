import Foundation
import Kafka
import Synchronization

/// Reads one partition from an offset without joining a group, record by record, until the
/// caller has what it wants or a deadline passes. With `follow`, it keeps waiting for new records
/// after reaching the end (for `levee result --wait`); without, it stops at the end.
enum PartitionScan {
    enum Step { case next, stop }

    static func scan(_ connection: KafkaConnection, partition: TopicPartition, from offset: Int64,
                     follow: Bool, deadline: ContinuousClock.Instant,
                     _ visit: @escaping @Sendable (KafkaMessage) throws -> Step) async throws {
        var settings = ["enable.partition.eof": "true"]
        // Reaching the end is how a one-off read finishes: do not let the broker hold the last
        // empty fetch for its default 500 ms. A follower keeps the long poll.
        if !follow { settings["fetch.wait.max.ms"] = "10" }
        let consumer = try KafkaConsumer(configuration: connection.configuration(settings), bufferCapacity: 2000)
        defer { Task.detached { await consumer.close() } }
        try consumer.assign([TopicPartitionOffset(partition, offset: offset)])
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for try await event in consumer.events {
                    switch event {
                    case .message(let message):
                        if try visit(message) == .stop { return true }
                    case .partitionEnd:
                        if !follow { return true }
                    case .error(let error) where error.kind == .unknownTopicOrPartition:
                        throw error
                    default:
                        continue
                    }
                }
                return true
            }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                return false
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    /// The first offset at or after `time` in `partition`, or the beginning when `time` is nil.
    static func offset(_ connection: KafkaConnection, partition: TopicPartition, atOrAfter time: Timestamp?,
                       searchTimeout: Duration = .seconds(10)) async throws -> Int64 {
        guard let time else { return KafkaOffset.beginning }
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        return try await startOffsets(consumer, [partition], since: time, backfill: 10_000, searchTimeout: searchTimeout)
            .first?.offset ?? KafkaOffset.beginning
    }

    /// Where to start reading each partition to see every record written since `since`.
    ///
    /// Kafka answers "end" (-1) when no record is that recent, and then the end is right; but
    /// librdkafka 2.0.2's mock cluster answers -1 for every query. So an "end" answer is checked
    /// by a binary search over the record timestamps of the last `backfill` records
    /// (``OffsetProbe``): correct on both, bounded, and on the mock it starts near `since` rather
    /// than `backfill` records before the end, so what follows does not grow with the topic.
    ///
    /// `searchTimeout` bounds each binary search; one cut short answers early (see ``OffsetProbe``).
    static func startOffsets(_ consumer: KafkaConsumer, _ partitions: [TopicPartition], since: Timestamp,
                             backfill: Int64, searchTimeout: Duration = .seconds(10)) async throws -> [TopicPartitionOffset] {
        var query: [TopicPartition: Int64] = [:]
        for p in partitions { query[p] = since.millisecondsSinceEpoch }
        var result: [TopicPartitionOffset] = []
        var probe: OffsetProbe?
        defer { if let probe { Task.detached { await probe.close() } } }
        for answer in try await consumer.offsetsForTimes(query) {
            if answer.offset >= 0 {
                result.append(answer)
            } else {
                let marks = try await consumer.watermarks(answer.topicPartition)
                let floor = max(marks.low, marks.high - backfill)
                if marks.high <= floor {
                    result.append(TopicPartitionOffset(answer.topicPartition, offset: floor))
                    continue
                }
                let prober = try probe ?? OffsetProbe(configuration: consumer.configuration)
                probe = prober
                let offset = await prober.firstOffset(in: answer.topicPartition, from: floor, below: marks.high,
                                                      atOrAfter: since.millisecondsSinceEpoch, timeout: searchTimeout)
                result.append(TopicPartitionOffset(answer.topicPartition, offset: offset))
            }
        }
        return result
    }
}

/// Finds where records of a given age start in a partition by reading single records' timestamps
/// (a binary search over offsets), for brokers whose ListOffsets-by-time cannot be trusted.
///
/// Record timestamps are assumed to grow with offsets (create time from producers with
/// roughly synchronised clocks; callers search from a time with a margin). Every uncertain
/// answer errs early: a start offset too early costs reading more, one too late would miss
/// records. So a failed or slow probe gives the lower bound found so far.
final class OffsetProbe: Sendable {
    private let consumer: KafkaConsumer
    private let assigned = Mutex<TopicPartition?>(nil)
    /// Probes per search at most (a search over 2^40 offsets needs 41).
    static let maxProbes = 64

    init(configuration: KafkaConfiguration) throws {
        var configuration = configuration
        // Only positions and timestamps matter: read past open and aborted transactions.
        configuration["isolation.level"] = "read_uncommitted"
        configuration["enable.partition.eof"] = "true"
        // Every probe seeks, and a seek waits for the fetch in flight: keep fetches short.
        configuration["fetch.wait.max.ms"] = "5"
        // Small fetches (a probe needs one record), and a buffer they never fill: a full buffer
        // makes the poll thread wait for room (50 ms) before it runs the next seek, and a paused
        // partition (or one librdkafka stops fetching because enough is queued, with
        // queued.min.messages=1) left the fetcher asleep for a second after the seek.
        configuration["max.partition.fetch.bytes"] = "65536"
        configuration["group.id"] = nil
        consumer = try KafkaConsumer(configuration: configuration, bufferCapacity: 10_000)
    }

    func close() async { await consumer.close() }

    /// The first offset in `[floor, high]` from which every record has a timestamp at or after
    /// `time` (milliseconds since the epoch); `high` when every record is older; `floor` when the
    /// records cannot tell (no timestamps) or the search takes longer than `timeout`.
    func firstOffset(in partition: TopicPartition, from floor: Int64, below high: Int64, atOrAfter time: Int64,
                     timeout: Duration = .seconds(10)) async -> Int64 {
        let lowerBound = LowerBound(floor)
        let answer: Int64? = try? await withThrowingTaskGroup(of: Int64?.self) { group in
            group.addTask { try await self.search(partition, floor: floor, high: high, time: time, lowerBound: lowerBound) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
        return answer ?? lowerBound.value.withLock { $0 }
    }

    /// The best safe answer so far, for a search cut short.
    private final class LowerBound: Sendable {
        let value: Mutex<Int64>
        init(_ offset: Int64) { value = Mutex(offset) }
    }

    /// Invariant: the first record at or after `lo` is older than `time` (or `lo` is the floor),
    /// and the first record at or after `hi` is not (or `hi` is the end).
    private func search(_ partition: TopicPartition, floor: Int64, high: Int64, time: Int64,
                        lowerBound: LowerBound) async throws -> Int64? {
        guard let first = try await read(partition, at: floor) else { return floor }  // nothing to read there
        guard let firstTime = first.timestamp else { return floor }
        if firstTime >= time { return floor }  // everything in the window is recent enough
        var lo = first.offset, hi = high
        lowerBound.value.withLock { $0 = lo }
        var probes = 1
        // The newest record first: when it is older than `time` (Kafka's "end" answer) one probe settles it.
        var nextProbe = max(lo + 1, high - 1)
        while hi - lo > 1, probes < Self.maxProbes {
            let mid = nextProbe
            probes += 1
            guard let record = try await read(partition, at: mid) else {
                hi = mid  // no record from `mid` to the end
                nextProbe = lo + (hi - lo) / 2
                continue
            }
            guard let stamp = record.timestamp else { return lo }
            if stamp >= time {
                hi = mid
            } else {
                // `record` is old: nothing before it is needed (an offset at or past `hi` means the
                // end-of-partition answer that set `hi` was stale; `mid` is still old).
                lo = record.offset < hi ? record.offset : mid
                lowerBound.value.withLock { $0 = lo }
            }
            nextProbe = lo + (hi - lo) / 2
        }
        return hi - lo <= 1 ? hi : lo
    }

    /// The first record at or after `offset` (offset and timestamp), or nil at the end of the partition.
    private func read(_ partition: TopicPartition, at offset: Int64) async throws -> (offset: Int64, timestamp: Int64?)? {
        let isAssigned = assigned.withLock { $0 == partition }
        if isAssigned {
            // A seek drops buffered and prefetched records of the partition (see KafkaConsumer.seek).
            try await consumer.seek([TopicPartitionOffset(partition, offset: offset)])
        } else {
            try consumer.assign([TopicPartitionOffset(partition, offset: offset)])
            assigned.withLock { $0 = partition }
        }
        var events = consumer.events.makeAsyncIterator()
        while let event = try await events.next() {
            switch event {
            case .message(let message) where message.topicPartition == partition && message.offset >= offset:
                return (message.offset, message.timestampMilliseconds)
            case .partitionEnd(let end) where end.topicPartition == partition:
                // May be left over from the previous probe near the end: then this answer is
                // early, which only makes the caller read more.
                return nil
            case .error(let error) where error.kind == .unknownTopicOrPartition:
                throw error
            default:
                continue
            }
        }
        throw CancellationError()
    }
}
