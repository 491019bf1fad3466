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
        let offsets = try await consumer.offsetsForTimes([partition: time.millisecondsSinceEpoch])
        return offsets.first?.offset ?? KafkaOffset.beginning
    }
}
