/// A topic and partition.
public struct TopicPartition: Hashable, Sendable, Codable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }
}

/// A partition with an offset: a position to commit, seek to or look up.
///
/// For commits the offset is the *next* offset to consume (last processed + 1), as in Kafka.
public struct TopicPartitionOffset: Hashable, Sendable, Codable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(_ topic: String, _ partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    public init(_ topicPartition: TopicPartition, offset: Int64) {
        self.init(topicPartition.topic, topicPartition.partition, offset: offset)
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }

    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// Special offsets understood by librdkafka (`RD_KAFKA_OFFSET_*`).
public enum KafkaOffset {
    /// The first offset still in the partition.
    public static let beginning: Int64 = -2
    /// The offset after the last message (only new messages are read).
    public static let end: Int64 = -1
    /// The committed offset, or `auto.offset.reset` if there is none.
    public static let stored: Int64 = -1000
    /// No offset (e.g. nothing committed yet).
    public static let invalid: Int64 = -1001
}

/// A Kafka record header. Values are bytes; `nil` is a header without a value.
public struct KafkaHeader: Hashable, Sendable {
    public var name: String
    public var value: [UInt8]?

    public init(_ name: String, _ value: [UInt8]?) {
        self.name = name
        self.value = value
    }

    public init(_ name: String, _ value: String) {
        self.init(name, Array(value.utf8))
    }

    /// The value decoded as UTF-8, if it is valid UTF-8.
    public var stringValue: String? { value.flatMap { String(validating: $0, as: UTF8.self) } }
}

/// A record to produce. Key and value are bytes; a `nil` value is a tombstone (for compacted topics).
public struct ProducerRecord: Sendable {
    public var topic: String
    /// An explicit partition, or `nil` to let the configured partitioner choose (by key).
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// Milliseconds since the Unix epoch, or `nil` for "now".
    public var timestampMilliseconds: Int64?

    public init(
        topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestampMilliseconds: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
    }

    /// A record with UTF-8 key and value.
    public init(topic: String, partition: Int32? = nil, key: String?, value: String?, headers: [KafkaHeader] = []) {
        self.init(
            topic: topic, partition: partition, key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) },
            headers: headers)
    }
}

/// Where an acknowledged record was written.
public struct DeliveryReport: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// A record read from Kafka.
public struct KafkaMessage: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// Milliseconds since the Unix epoch (create or log-append time), or `nil` if the broker gave none.
    public var timestampMilliseconds: Int64?

    public init(
        topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
        headers: [KafkaHeader] = [], timestampMilliseconds: Int64? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
    /// The offset to commit once this message is processed (`offset + 1`).
    public var nextOffset: TopicPartitionOffset { TopicPartitionOffset(topic, partition, offset: offset + 1) }
    /// The key decoded as UTF-8, if present and valid.
    public var keyString: String? { key.flatMap { String(validating: $0, as: UTF8.self) } }
    /// The value decoded as UTF-8, if present and valid.
    public var valueString: String? { value.flatMap { String(validating: $0, as: UTF8.self) } }
    /// The first header called `name`.
    public func header(_ name: String) -> KafkaHeader? { headers.first { $0.name == name } }

    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// A log line from librdkafka (level is syslog-style: 3 error, 4 warning, 6 info, 7 debug).
public struct KafkaLogMessage: Sendable {
    public var level: Int32
    public var facility: String
    public var message: String
}

/// Receives librdkafka's log lines on the client's poll thread. Must not block.
public typealias KafkaLogHandler = @Sendable (KafkaLogMessage) -> Void
