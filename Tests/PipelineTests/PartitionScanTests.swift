import Foundation
import Kafka
import Testing
@testable import Pipeline

/// `PartitionScan.startOffsets` on the embedded cluster, whose ListOffsets-by-time answers -1 for
/// every query: the start offset must come from the records' own timestamps (binary search), so
/// a read from a point in time does not start `backfill` records before the end.
@Suite("PartitionScan start offsets (embedded cluster)", .serialized)
struct PartitionScanTests {
    /// One partition holding `count` records, record i stamped `base + i` seconds. The cluster
    /// is returned too: it lives only as long as someone holds it.
    static func partition(count: Int, base: Int64) async throws -> (KafkaConnection, TopicPartition, EmbeddedCluster) {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = "scan.\(UUID().uuidString.prefix(8).lowercased())"
        try cluster.createTopic(topic, partitions: 1)
        let connection = KafkaConnection(bootstrapServers: cluster.bootstrapServers)
        if count > 0 {
            let producer = try KafkaProducer(configuration: connection.configuration(["linger.ms": "5"]))
            for i in 0..<count {
                try await producer.sendAndForget(ProducerRecord(topic: topic, partition: 0, key: Array("k\(i)".utf8),
                                                                value: Array("v\(i)".utf8), timestampMilliseconds: base + Int64(i) * 1000))
            }
            try await producer.flush()
            try await producer.close()
        }
        return (connection, TopicPartition(topic, 0), cluster)
    }

    /// A search cut short by its timeout answers early by design; on a loaded test machine give it
    /// all the time it needs, so the answers checked here are the search's own.
    static let searchTimeout: Duration = .seconds(240)

    static func start(_ connection: KafkaConnection, _ partition: TopicPartition, since: Int64, backfill: Int64) async throws -> Int64 {
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        let answer = try await PartitionScan.startOffsets(consumer, [partition], since: Timestamp(millisecondsSinceEpoch: since), backfill: backfill,
                                                                 searchTimeout: Self.searchTimeout)
        return try #require(answer.first).offset
    }

    @Test("finds the first record at or after the time, in the middle, at the edges and past the end", .timeLimit(.minutes(10)))
    func binarySearch() async throws {
        let base: Int64 = 1_700_000_000_000
        let (connection, partition, cluster) = try await Self.partition(count: 1000, base: base)
        defer { withExtendedLifetime(cluster) {} }
        // Exactly on a record's time, and between two records.
        #expect(try await Self.start(connection, partition, since: base + 500_000, backfill: 100_000) == 500)
        #expect(try await Self.start(connection, partition, since: base + 123_400, backfill: 100_000) == 124)
        #expect(try await Self.start(connection, partition, since: base + 1_000, backfill: 100_000) == 1)
        #expect(try await Self.start(connection, partition, since: base + 999_000, backfill: 100_000) == 999)
        // Older than everything: the beginning. Newer than everything: the end.
        #expect(try await Self.start(connection, partition, since: base - 60_000, backfill: 100_000) == 0)
        #expect(try await Self.start(connection, partition, since: base + 5_000_000, backfill: 100_000) == 1000)
        // The backfill still bounds the read: a time before the window starts at the window.
        #expect(try await Self.start(connection, partition, since: base + 10_000, backfill: 100) == 900)
        #expect(try await Self.start(connection, partition, since: base + 950_000, backfill: 100) == 950)
    }

    @Test("an empty partition starts at its beginning", .timeLimit(.minutes(1)))
    func empty() async throws {
        let (connection, partition, cluster) = try await Self.partition(count: 0, base: 0)
        defer { withExtendedLifetime(cluster) {} }
        #expect(try await Self.start(connection, partition, since: 1_700_000_000_000, backfill: 100) == 0)
    }

    @Test("ResultLookup-style offset(atOrAfter:) uses the same search; nil time means the beginning", .timeLimit(.minutes(5)))
    func offsetAtOrAfter() async throws {
        let base: Int64 = 1_700_000_000_000
        let (connection, partition, cluster) = try await Self.partition(count: 300, base: base)
        defer { withExtendedLifetime(cluster) {} }
        #expect(try await PartitionScan.offset(connection, partition: partition, atOrAfter: Timestamp(millisecondsSinceEpoch: base + 200_000),
                                                searchTimeout: Self.searchTimeout) == 200)
        #expect(try await PartitionScan.offset(connection, partition: partition, atOrAfter: nil) == KafkaOffset.beginning)
    }
}
