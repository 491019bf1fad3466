import Dispatch
import Foundation
@testable import Kafka
import Synchronization
import Testing

/// The consumer's back-pressure pause across a change of assignment, made deterministic: the
/// tests fill the consumer's buffer themselves (records of a topic nobody reads, pushed straight
/// into ``ConsumerEventBuffer``), so the poll thread pauses exactly when the test wants, and drive
/// the reassignment with `assign` or a subscription change (a real group rebalance on the mock).
///
/// - Fix 7: a partition that comes back must not be sought, when the buffer fills, to where an
///   earlier assignment of it stopped reading (that skipped every record in between).
/// - Fix 8: librdkafka keeps a partition's pause flag across unassign/assign; one paused for
///   back-pressure when it was revoked must be fetched again once it is assigned again.
@Suite("Consumer pause across reassignment", .serialized)
struct ReassignmentPauseTests {
    static let capacity = 16
    static let filler = "levee.test.filler"

    func producer(_ cluster: EmbeddedCluster) throws -> KafkaProducer {
        try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers))
    }

    func consumer(_ cluster: EmbeddedCluster, group: String?, onRevoke: (@Sendable (PartitionRevocation) -> Void)? = nil) throws -> KafkaConsumer {
        var properties = fastGroup
        if let group { properties["group.id"] = group }
        return try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers, properties),
                                 bufferCapacity: Self.capacity, onRevoke: onRevoke)
    }

    func produce(_ producer: KafkaProducer, _ topic: String, _ values: Range<Int>) async throws {
        for i in values { try await producer.sendAndForget(ProducerRecord(topic: topic, partition: 0, key: nil, value: "\(i)")) }
        try await producer.flush()
    }

    /// Fills the buffer as a slow reader would, and returns once the poll thread has applied its
    /// back-pressure pause (pausing and seeking every assigned partition, under `pauses`).
    func fillBuffer(_ consumer: KafkaConsumer) async throws {
        for i in 0..<Self.capacity {
            consumer.core.buffer.push(.message(KafkaMessage(topic: Self.filler, partition: 0, offset: Int64(i), key: nil, value: nil)))
        }
        consumer.core.client.wake()
        try await eventually(.seconds(10), "the back-pressure pause") { consumer.core.pauses.withLock { $0.backpressurePaused } }
    }

    /// Reads the filler records back (the reader catching up), leaving other events unread only
    /// if they come after them.
    func drainFiller(_ consumer: KafkaConsumer) async throws {
        var read = 0
        while read < Self.capacity {
            let event = try await nextEvent(consumer, "filler records")
            if case .message(let message) = event, message.topic == Self.filler { read += 1 }
        }
    }

    func nextEvent(_ consumer: KafkaConsumer, _ what: String, timeout: Duration = .seconds(20)) async throws -> KafkaConsumerEvent {
        let events = consumer.events
        let event = try await within(timeout, what) { () async throws -> KafkaConsumerEvent? in
            var iterator = events.makeAsyncIterator()
            return try await iterator.next()
        }
        return try #require(event, "the consumer ended while waiting for \(what)")
    }

    /// The first record of `topic` from here on (other events skipped), or a timeout.
    func firstRecord(of topic: String, _ consumer: KafkaConsumer, timeout: Duration = .seconds(15)) async throws -> KafkaMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw TestTimeout(what: "a record of \(topic)") }
            if case .message(let message) = try await nextEvent(consumer, "a record of \(topic)", timeout: left), message.topic == topic {
                return message
            }
        }
    }

    func waitForAssignment(of tp: TopicPartition, _ consumer: KafkaConsumer) async throws {
        while true {
            if case .partitionsAssigned(let partitions) = try await nextEvent(consumer, "the assignment of \(tp)"), partitions.contains(tp) {
                return
            }
        }
    }

    // MARK: fix 7: no seek to an earlier assignment's position

    @Test("a back-pressure pause after assign does not seek to where an earlier assignment stopped", .timeLimit(.minutes(2)))
    func assignForgetsEarlierPositions() async throws {
        let cluster = try EmbeddedCluster()
        let topic = uniqueName("reassign-seek")
        try cluster.createTopic(topic, partitions: 1)
        let tp = TopicPartition(topic, 0)
        let producer = try producer(cluster)
        try await produce(producer, topic, 0..<20)
        let consumer = try consumer(cluster, group: nil)
        try consumer.assign([TopicPartitionOffset(tp, offset: 0)])
        let first = try await collect(consumer, count: 20)
        #expect(first.map(\.offset) == Array(0..<20))

        // The partition is assigned again from offset 0 (as a rebalance does from the committed
        // offset), held by a user pause so that no record of the new assignment arrives before
        // the buffer fills: the back-pressure pause then decides where the partition resumes.
        try consumer.pause([tp])
        try consumer.assign([TopicPartitionOffset(tp, offset: 0)])
        try await fillBuffer(consumer)
        try consumer.resume([tp])
        try await produce(producer, topic, 20..<21)
        try await drainFiller(consumer)
        let resumed = try await firstRecord(of: topic, consumer)
        #expect(resumed.offset == 0, "the new assignment resumed at \(resumed.offset): records 0..<\(resumed.offset) were skipped")
        await consumer.close()
        try await producer.close()
    }

    @Test("a back-pressure pause after a group rebalance does not seek to where the revoked assignment stopped", .timeLimit(.minutes(2)))
    func rebalanceForgetsEarlierPositions() async throws {
        let cluster = try EmbeddedCluster()
        let topic = uniqueName("rebalance-seek"), other = uniqueName("rebalance-other")
        try cluster.createTopic(topic, partitions: 1)
        try cluster.createTopic(other, partitions: 1)
        let tp = TopicPartition(topic, 0)
        let producer = try producer(cluster)
        try await produce(producer, topic, 0..<20)
        let consumer = try consumer(cluster, group: uniqueName("g"))
        try consumer.subscribe([topic])
        try await waitForAssignment(of: tp, consumer)
        let first = try await collect(consumer, count: 20)
        #expect(first.map(\.offset) == Array(0..<20))

        // Nothing is committed, so the partition comes back at offset 0 after the rebalance that
        // the subscription change causes (eager protocol: everything revoked, then assigned).
        try consumer.pause([tp])
        try consumer.subscribe([topic, other])
        try await waitForAssignment(of: tp, consumer)
        // Let librdkafka look up the committed offset and start the (paused) fetcher, so the
        // seek below is not overtaken by that start.
        try await Task.sleep(for: .seconds(1))
        try await fillBuffer(consumer)
        try consumer.resume([tp])
        try await produce(producer, topic, 20..<21)
        try await drainFiller(consumer)
        let resumed = try await firstRecord(of: topic, consumer)
        #expect(resumed.offset == 0, "the new assignment resumed at \(resumed.offset): records 0..<\(resumed.offset) were skipped")
        await consumer.close()
        try await producer.close()
    }

    // MARK: fix 8: paused at revoke, fetched again after reassignment

    @Test("a partition back-pressure-paused when it was unassigned is fetched again once assigned", .timeLimit(.minutes(2)))
    func assignResumesPausedAtUnassign() async throws {
        let cluster = try EmbeddedCluster()
        let topic = uniqueName("reassign-pause")
        try cluster.createTopic(topic, partitions: 1)
        let tp = TopicPartition(topic, 0)
        let producer = try producer(cluster)
        try await produce(producer, topic, 0..<5)
        let consumer = try consumer(cluster, group: nil)
        try consumer.assign([TopicPartitionOffset(tp, offset: 0)])
        #expect(try await collect(consumer, count: 5).map(\.offset) == Array(0..<5))

        try await fillBuffer(consumer)
        try consumer.assign([])
        // The reader catches up while nothing is assigned: the back-pressure resume finds nothing to resume.
        try await drainFiller(consumer)
        try await eventually(.seconds(10), "the back-pressure resume") { !consumer.core.pauses.withLock { $0.backpressurePaused } }
        try consumer.assign([TopicPartitionOffset(tp, offset: 0)])
        let again = try await firstRecord(of: topic, consumer)
        #expect(again.offset == 0)
        await consumer.close()
        try await producer.close()
    }

    @Test("a partition back-pressure-paused at its revoke is fetched again after the group gives it back", .timeLimit(.minutes(2)))
    func rebalanceResumesPausedAtRevoke() async throws {
        let cluster = try EmbeddedCluster()
        let topic = uniqueName("rebalance-pause"), other = uniqueName("rebalance-other")
        try cluster.createTopic(topic, partitions: 1)
        try cluster.createTopic(other, partitions: 1)
        let tp = TopicPartition(topic, 0)
        let producer = try producer(cluster)
        try await produce(producer, topic, 0..<5)

        // The revoke callback holds the rebalance (on the poll thread) until the test has read
        // the buffer down, so the back-pressure resume comes after the partitions were unassigned.
        let armed = Atomic<Bool>(false), revoking = Atomic<Bool>(false)
        let release = DispatchSemaphore(value: 0)
        let consumer = try consumer(cluster, group: uniqueName("g")) { _ in
            guard armed.exchange(false, ordering: .acquiringAndReleasing) else { return }
            revoking.store(true, ordering: .releasing)
            _ = release.wait(timeout: .now() + 30)
        }
        try consumer.subscribe([topic])
        try await waitForAssignment(of: tp, consumer)
        #expect(try await collect(consumer, count: 5).map(\.offset) == Array(0..<5))

        try await fillBuffer(consumer)
        armed.store(true, ordering: .releasing)
        try consumer.subscribe([topic, other])
        try await eventually(.seconds(20), "the revoke") { revoking.load(ordering: .acquiring) }
        try await drainFiller(consumer)
        release.signal()
        try await eventually(.seconds(10), "the back-pressure resume") { !consumer.core.pauses.withLock { $0.backpressurePaused } }
        try await waitForAssignment(of: tp, consumer)
        let again = try await firstRecord(of: topic, consumer)
        #expect(again.offset == 0)
        await consumer.close()
        try await producer.close()
    }
}
