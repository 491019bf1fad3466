import Foundation
import Kafka

/// Reads one partition from an offset without joining a group, record by record, until the
/// caller has what it wants or a deadline passes. With `follow`, it keeps waiting for new records
/// after reaching the end (for `levee result --wait`); without, it stops at the end.
enum PartitionScan {
    enum Step { case next, stop }

    static func scan(_ connection: KafkaConnection, partition: TopicPartition, from offset: Int64,
                     follow: Bool, deadline: ContinuousClock.Instant,
                     _ visit: @escaping @Sendable (KafkaMessage) throws -> Step) async throws {
        let consumer = try KafkaConsumer(
            configuration: connection.configuration(["enable.partition.eof": "true"]), bufferCapacity: 2000)
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
    static func offset(_ connection: KafkaConnection, partition: TopicPartition, atOrAfter time: Timestamp?) async throws -> Int64 {
        guard let time else { return KafkaOffset.beginning }
        let consumer = try KafkaConsumer(configuration: connection.configuration(), bufferCapacity: 1)
        defer { Task.detached { await consumer.close() } }
        return try await startOffsets(consumer, [partition], since: time, backfill: 10_000).first?.offset ?? KafkaOffset.beginning
    }

    /// Where to start reading each partition to see every record written since `since`.
    ///
    /// Kafka answers "end" (-1) when no record is that recent, and then the end is right; but
    /// librdkafka 2.0.2's mock cluster answers -1 for every query. So an "end" answer starts
    /// `backfill` records before the end instead: correct on both, and bounded.
    static func startOffsets(_ consumer: KafkaConsumer, _ partitions: [TopicPartition], since: Timestamp,
                             backfill: Int64) async throws -> [TopicPartitionOffset] {
        var query: [TopicPartition: Int64] = [:]
        for p in partitions { query[p] = since.millisecondsSinceEpoch }
        var result: [TopicPartitionOffset] = []
        for answer in try await consumer.offsetsForTimes(query) {
            if answer.offset >= 0 {
                result.append(answer)
            } else {
                let marks = try await consumer.watermarks(answer.topicPartition)
                result.append(TopicPartitionOffset(answer.topicPartition, offset: max(marks.low, marks.high - backfill)))
            }
        }
        return result
    }
}
