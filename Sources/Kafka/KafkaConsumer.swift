import Dispatch
import Foundation

/// A partition's position against its group's committed offset.
public struct PartitionLag: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    /// The group's committed offset (next to read), or `nil` if nothing is committed.
    public var committed: Int64?
    /// The first offset still stored.
    public var lowWatermark: Int64
    /// The next offset to be written (for read_committed readers: the last stable offset).
    public var highWatermark: Int64
    /// Records not yet consumed by the group: from the committed offset (or the low watermark,
    /// if nothing is committed) to the high watermark.
    public var lag: Int64 { max(0, highWatermark - max(committed ?? lowWatermark, lowWatermark)) }

    public var description: String {
        "\(topic)[\(partition)] committed=\(committed.map(String.init) ?? "-") high=\(highWatermark) lag=\(lag)"
    }
}

/// A Kafka consumer: group membership, manual offsets, pause/resume, seek, and a bounded
/// `AsyncSequence` of records.
///
/// Defaults (each can be overridden): `enable.auto.commit=false`, `enable.auto.offset.store=false`
/// (offsets are stored or committed by the caller after processing), `isolation.level=read_committed`,
/// `auto.offset.reset=earliest`.
///
/// A dedicated poll thread blocks in `rd_kafka_queue_poll` and moves records into a buffer of
/// `bufferCapacity` messages. When the buffer is full every assigned partition is paused (the
/// thread keeps serving the group, so the session does not time out) and resumed once the reader
/// has drained half of it: a slow reader never makes memory grow without bound.
///
/// Rebalances are handled on the poll thread (eager or cooperative, as `rd_kafka_rebalance_protocol`
/// says) and delivered in order with the records as ``KafkaConsumerEvent`` values. Messages of
/// revoked partitions still in the buffer are discarded.
public final class KafkaConsumer: Sendable {
    /// The properties added when not set explicitly.
    public static let defaultProperties: [String: String] = [
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    ]

    let core: RDKafkaConsumer
    /// The configuration the consumer was built with (defaults applied).
    public let configuration: KafkaConfiguration
    /// Whether `group.id` came from the caller (needed to subscribe and commit).
    let hasGroup: Bool

    /// Creates a consumer. Call ``subscribe(_:)`` (group) or ``assign(_:)`` (explicit partitions).
    ///
    /// - Parameters:
    ///   - bufferCapacity: messages held for the reader before partitions are paused.
    ///   - logHandler: receives librdkafka's log lines; without one they are dropped.
    ///   - onRevoke: called on the poll thread before partitions are taken away, while their
    ///     offsets can still be committed (see ``PartitionRevocation``). The rebalance waits for
    ///     it, so keep it short.
    /// - Throws: `KafkaError(kind: .configuration)` for a property librdkafka rejects.
    public init(
        configuration: KafkaConfiguration, bufferCapacity: Int = 1000, logHandler: KafkaLogHandler? = nil,
        onRevoke: (@Sendable (PartitionRevocation) -> Void)? = nil
    ) throws(KafkaError) {
        guard bufferCapacity > 0 else {
            throw KafkaError(kind: .configuration, message: "bufferCapacity must be at least 1", context: ["bufferCapacity": String(bufferCapacity)])
        }
        var configuration = configuration.withDefaults(Self.defaultProperties)
        hasGroup = configuration["group.id"].map { !$0.isEmpty } ?? false
        if !hasGroup {
            // librdkafka needs a group for assign() and the consumer queue; this one never joins
            // (no subscribe) and never commits.
            configuration["group.id"] = "levee-unjoined-\(UUID().uuidString.lowercased())"
        }
        // librdkafka prefetches up to 100,000 records per partition by default; bound it near what
        // the buffer takes (capacity plus the room for records arriving after a pause), so a
        // pause has little to drop and memory follows the reader's capacity.
        if configuration["queued.min.messages"] == nil {
            configuration["queued.min.messages"] = String(ConsumerEventBuffer.FlowPolicy(capacity: bufferCapacity).hardLimit)
        }
        self.configuration = configuration
        core = try RDKafkaConsumer(
            properties: configuration.properties, groupID: configuration["group.id"]!, bufferCapacity: bufferCapacity,
            logHandler: logHandler, onRevoke: onRevoke)
    }

    deinit { core.client.requestStop() }

    /// The group id (generated for a consumer created without one).
    public var groupID: String { core.groupID }

    /// The librdkafka client name (e.g. `rdkafka#consumer-2`).
    public var name: String { core.client.name }

    /// Joins the group and subscribes to `topics`. Assignments arrive as
    /// ``KafkaConsumerEvent/partitionsAssigned(_:)`` events.
    public func subscribe(_ topics: [String]) throws(KafkaError) {
        guard hasGroup else {
            throw KafkaError(kind: .configuration, message: "subscribing needs the property group.id", context: ["property": "group.id"])
        }
        try core.subscribe(topics)
    }

    /// Reads exactly these partitions from these offsets (no group rebalancing). Offsets may be
    /// ``KafkaOffset`` constants.
    public func assign(_ partitions: [TopicPartitionOffset]) throws(KafkaError) {
        try core.assign(partitions)
    }

    /// The partitions currently assigned to this consumer.
    public func assignment() throws(KafkaError) -> [TopicPartition] {
        try core.assignment()
    }

    /// Every event (records, rebalances, partition ends, non-fatal errors) in order.
    /// One task at a time may iterate; the sequence ends when the consumer is closed and throws
    /// on a fatal error.
    public var events: Events { Events(buffer: core.buffer) }

    /// Only the records (other events are skipped). Same buffer as ``events``.
    public var messages: Messages { Messages(buffer: core.buffer) }

    /// Marks `message` as processed: its next offset is committed by the next ``commit()`` call
    /// (`rd_kafka_offsets_store`).
    public func store(_ message: KafkaMessage) throws(KafkaError) {
        try core.store([message.nextOffset])
    }

    /// Stores explicit offsets (next offsets to read) for the next ``commit()``.
    public func store(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        try core.store(offsets)
    }

    /// Commits the stored offsets and waits for the coordinator's answer (on a dedicated thread).
    public func commit() async throws {
        let core = self.core
        try await core.client.blocking { () throws(KafkaError) in try core.commitBlocking(nil) }
    }

    /// Commits explicit offsets (next offsets to read) and waits for the coordinator's answer.
    public func commit(_ offsets: [TopicPartitionOffset]) async throws {
        let core = self.core
        try await core.client.blocking { () throws(KafkaError) in try core.commitBlocking(offsets) }
    }

    /// Commits without waiting (stored offsets when `offsets` is nil). A failure arrives later as
    /// an ``KafkaConsumerEvent/error(_:)`` event.
    public func commitAsync(_ offsets: [TopicPartitionOffset]? = nil) throws(KafkaError) {
        try core.commitAsync(offsets)
    }

    /// Stops fetching these partitions until ``resume(_:)``; the consumer stays in the group.
    public func pause(_ partitions: [TopicPartition]) throws(KafkaError) {
        try core.pause(partitions)
    }

    /// Resumes fetching paused partitions.
    public func resume(_ partitions: [TopicPartition]) throws(KafkaError) {
        try core.resume(partitions)
    }

    /// Moves the fetch position of assigned partitions; buffered records of those partitions are
    /// discarded so the next record comes from the new position.
    public func seek(_ offsets: [TopicPartitionOffset]) async throws {
        try await core.seek(offsets)
    }

    /// The group's committed offsets for these partitions (``KafkaOffset/invalid`` where none).
    public func committed(_ partitions: [TopicPartition], timeout: Duration = .seconds(10)) async throws -> [TopicPartitionOffset] {
        let core = self.core
        let ms = milliseconds(timeout)
        return try await core.client.blocking { () throws(KafkaError) in try core.committedBlocking(partitions, timeoutMilliseconds: ms) }
    }

    /// The consumer's current positions (next offset to fetch) for these partitions.
    public func positions(_ partitions: [TopicPartition]) throws(KafkaError) -> [TopicPartitionOffset] {
        try core.positions(partitions)
    }

    /// For each partition, the earliest offset whose timestamp is at or after the given time
    /// (milliseconds since the epoch); ``KafkaOffset/end`` when there is none.
    public func offsetsForTimes(_ query: [TopicPartition: Int64], timeout: Duration = .seconds(10)) async throws -> [TopicPartitionOffset] {
        let core = self.core
        let ms = milliseconds(timeout)
        let list = query.map { TopicPartitionOffset($0.key, offset: $0.value) }
        return try await core.client.blocking { () throws(KafkaError) in try core.offsetsForTimesBlocking(list, timeoutMilliseconds: ms) }
    }

    /// Low and high watermark of a partition, asked of its leader.
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> (low: Int64, high: Int64) {
        let client = core.client
        let ms = milliseconds(timeout)
        return try await client.blocking { () throws(KafkaError) in try client.watermarksBlocking(partition, timeoutMilliseconds: ms) }
    }

    /// The group's lag on these partitions (default: the current assignment). Works without
    /// joining: a consumer created with a group's `group.id` can report that group's lag.
    public func lag(_ partitions: [TopicPartition]? = nil, timeout: Duration = .seconds(10)) async throws -> [PartitionLag] {
        let partitions = try partitions ?? assignment()
        guard !partitions.isEmpty else { return [] }
        let committed = try await self.committed(partitions, timeout: timeout)
        var result: [PartitionLag] = []
        for item in committed {
            let marks = try await watermarks(item.topicPartition, timeout: timeout)
            result.append(
                PartitionLag(
                    topic: item.topic, partition: item.partition, committed: item.offset >= 0 ? item.offset : nil,
                    lowWatermark: marks.low, highWatermark: marks.high))
        }
        return result
    }

    /// The group metadata to pass to ``TransactionalProducer/sendOffsets(_:groupMetadata:timeout:)``.
    public func groupMetadata() throws(KafkaError) -> ConsumerGroupMetadata {
        try core.groupMetadata()
    }

    /// The member id the coordinator gave this consumer, once it has joined.
    public var memberID: String? { core.memberID }

    /// The group generation this consumer last joined, if it has joined (read from the group metadata).
    public var generationID: Int32? {
        guard let generation = (try? core.groupMetadata())?.generationID, generation >= 0 else { return nil }
        return generation
    }

    /// `"COOPERATIVE"`, `"EAGER"` or `"NONE"` (not yet joined), per `rd_kafka_rebalance_protocol`.
    public var rebalanceProtocol: String? { core.rebalanceProtocol }

    /// Counters about the bounded buffer (for metrics and tests).
    public var bufferStatistics: ConsumerBufferStatistics { core.buffer.statistics }

    /// Leaves the group (revoking partitions, running `onRevoke`), stops the poll thread and ends
    /// the event sequences. Bounded: gives up on a cluster that does not answer within 15 s.
    public func close() async {
        await core.client.stopAndWait()
    }

    /// All events of a consumer. See ``KafkaConsumer/events``.
    public struct Events: AsyncSequence, Sendable {
        public typealias Element = KafkaConsumerEvent
        let buffer: ConsumerEventBuffer

        public func makeAsyncIterator() -> Iterator { Iterator(buffer: buffer) }

        public struct Iterator: AsyncIteratorProtocol, Sendable {
            let buffer: ConsumerEventBuffer
            public mutating func next() async throws -> KafkaConsumerEvent? {
                try await buffer.next()
            }
        }
    }

    /// The records of a consumer. See ``KafkaConsumer/messages``.
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = KafkaMessage
        let buffer: ConsumerEventBuffer

        public func makeAsyncIterator() -> Iterator { Iterator(buffer: buffer) }

        public struct Iterator: AsyncIteratorProtocol, Sendable {
            let buffer: ConsumerEventBuffer
            public mutating func next() async throws -> KafkaMessage? {
                while let event = try await buffer.next() {
                    if case .message(let message) = event { return message }
                }
                return nil
            }
        }
    }
}

extension KafkaConsumer {
    /// Reads a bounded window of one partition from `offset`, without joining any group
    /// (assign + fetch), stopping at `maxMessages`, at the end of the partition, or at `timeout`.
    /// For tracing a job or inspecting a topic.
    public static func readWindow(
        configuration: KafkaConfiguration, partition: TopicPartition, from offset: Int64, maxMessages: Int,
        timeout: Duration = .seconds(10)
    ) async throws -> [KafkaMessage] {
        guard maxMessages > 0 else { return [] }
        var configuration = configuration
        configuration["group.id"] = nil
        configuration["enable.partition.eof"] = "true"
        let consumer = try KafkaConsumer(configuration: configuration, bufferCapacity: min(maxMessages, 1000))
        try consumer.assign([TopicPartitionOffset(partition, offset: offset)])
        let deadline = ContinuousClock.now + timeout
        let result = try await withThrowingTaskGroup(of: [KafkaMessage]?.self) { group in
            group.addTask {
                var messages: [KafkaMessage] = []
                for try await event in consumer.events {
                    switch event {
                    case .message(let message) where message.topicPartition == partition:
                        messages.append(message)
                        if messages.count >= maxMessages { return messages }
                    case .partitionEnd(let end) where end.topicPartition == partition:
                        return messages
                    case .error(let error) where error.kind == .unknownTopicOrPartition:
                        throw error
                    default:
                        continue
                    }
                }
                return messages
            }
            group.addTask {
                try await Task.sleep(until: deadline)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        await consumer.close()
        guard let result else {
            throw KafkaError(kind: .timeout, message: "reading the partition window did not finish in time", context: ["topic": partition.topic, "partition": String(partition.partition)])
        }
        return result
    }
}

/// Partitions about to be taken from this consumer, handed to the `onRevoke` hook on the
/// consumer's poll thread (a dedicated thread, not Swift's cooperative pool, so blocking here is
/// allowed and holds the rebalance until the hook returns).
public struct PartitionRevocation: Sendable {
    /// The partitions being revoked.
    public let partitions: [TopicPartition]
    /// Whether they were lost (session timeout) rather than revoked in a clean rebalance; offsets
    /// committed now would likely be rejected.
    public let lost: Bool
    let core: RDKafkaConsumer

    /// Commits offsets (next offsets to read) synchronously, before the partitions go.
    public func commit(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        try core.commitBlocking(offsets)
    }

    /// Blocks the poll thread, and so the rebalance, until `work` has finished: e.g. committing
    /// the open transaction that holds these partitions' offsets.
    public func awaitCompletion(of work: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await work()
            done.signal()
        }
        done.wait()
    }
}
