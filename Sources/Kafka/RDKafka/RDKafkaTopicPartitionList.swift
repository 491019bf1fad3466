import CRdKafka

/// Owns one `rd_kafka_topic_partition_list_t` and destroys it exactly once.
final class RDKafkaTopicPartitionList {
    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(capacity: Int = 1) {
        pointer = rd_kafka_topic_partition_list_new(Int32(max(1, capacity)))
    }

    convenience init(_ offsets: [TopicPartitionOffset]) {
        self.init(capacity: offsets.count)
        for item in offsets { add(item.topic, item.partition, offset: item.offset) }
    }

    convenience init(_ partitions: [TopicPartition], offset: Int64 = KafkaOffset.invalid) {
        self.init(capacity: partitions.count)
        for item in partitions { add(item.topic, item.partition, offset: offset) }
    }

    /// Takes ownership of a list librdkafka handed to us (e.g. from `rd_kafka_assignment`).
    init(owning pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        self.pointer = pointer
    }

    deinit { rd_kafka_topic_partition_list_destroy(pointer) }

    /// Calls `body` with the C list, keeping this owner (and so the list) alive until it returns.
    /// Use this for every C call: Swift may release an object right after its last use, which
    /// could be before a C function that was handed `pointer` has finished.
    func withPointer<R>(_ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(pointer) }
    }

    func add(_ topic: String, _ partition: Int32, offset: Int64) {
        let element = rd_kafka_topic_partition_list_add(pointer, topic, partition)
        element?.pointee.offset = offset
    }

    var offsets: [TopicPartitionOffset] { Self.offsets(of: pointer) }

    /// Per-partition errors in the list (librdkafka reports some failures this way).
    var firstError: KafkaError? { Self.firstError(of: pointer) }

    static func offsets(of list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [TopicPartitionOffset] {
        guard let list, let elements = list.pointee.elems else { return [] }
        var result: [TopicPartitionOffset] = []
        result.reserveCapacity(Int(list.pointee.cnt))
        for i in 0..<Int(list.pointee.cnt) {
            let e = elements[i]
            result.append(TopicPartitionOffset(String(cString: e.topic), e.partition, offset: e.offset))
        }
        return result
    }

    static func firstError(of list: UnsafePointer<rd_kafka_topic_partition_list_t>) -> KafkaError? {
        guard let elements = list.pointee.elems else { return nil }
        for i in 0..<Int(list.pointee.cnt) where elements[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let e = elements[i]
            return RDKafkaErrors.error(
                code: e.err, context: ["topic": String(cString: e.topic), "partition": String(e.partition)])
        }
        return nil
    }
}
