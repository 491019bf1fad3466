/// Brokers and topics as the cluster reports them (`rd_kafka_metadata`).
public struct KafkaClusterMetadata: Sendable, Hashable {
    /// A broker of the cluster.
    public struct Broker: Sendable, Hashable {
        public var id: Int32
        public var host: String
        public var port: Int
    }

    /// The broker that answered.
    public var originatingBrokerID: Int32
    public var brokers: [Broker]
    public var topics: [KafkaTopicMetadata]

    /// The topic called `name`, if the cluster has it.
    public func topic(_ name: String) -> KafkaTopicMetadata? { topics.first { $0.name == name } }
}

/// One topic's partitions as the cluster reports them.
public struct KafkaTopicMetadata: Sendable, Hashable {
    /// A partition: its leader and replicas.
    public struct Partition: Sendable, Hashable {
        public var id: Int32
        public var leader: Int32
        public var replicas: [Int32]
        public var inSyncReplicas: [Int32]
        /// librdkafka's name for a partition-level error (e.g. `LEADER_NOT_AVAILABLE`), if any.
        public var error: String?
    }

    public var name: String
    public var partitions: [Partition]
    /// librdkafka's name for a topic-level error, if any.
    public var error: String?

    public var partitionCount: Int { partitions.count }
}

/// A topic to create.
public struct NewTopic: Sendable, Hashable {
    public var name: String
    public var partitions: Int32
    /// Replicas per partition; `-1` lets the broker use its default.
    public var replicationFactor: Int16
    /// Topic configs, e.g. `["cleanup.policy": "compact", "retention.ms": "604800000"]`.
    public var configs: [String: String]

    public init(name: String, partitions: Int32, replicationFactor: Int16 = -1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// What happened to one topic of a create request.
public enum TopicCreation: Sendable, Hashable {
    case created
    /// The topic was there already (not an error when "ensuring" topics).
    case alreadyExisted
}

/// One entry of a topic's configuration (DescribeConfigs).
public struct TopicConfigEntry: Sendable, Hashable {
    public var name: String
    /// `nil` for sensitive or unset values.
    public var value: String?
    public var isDefault: Bool
    public var isReadOnly: Bool
    public var isSensitive: Bool
}

/// Cluster administration: create topics, read metadata and topic configs.
///
/// Every operation is bounded by its `timeout` and runs its blocking C call on a dedicated
/// thread. Unreachable brokers surface as `.timeout` / `.retriable` errors, never hangs.
public final class KafkaAdmin: Sendable {
    let core: RDKafkaAdmin

    /// Creates an admin client (a librdkafka producer handle that never produces).
    public init(configuration: KafkaConfiguration, logHandler: KafkaLogHandler? = nil) throws(KafkaError) {
        core = try RDKafkaAdmin(properties: configuration.withDefaults(["allow.auto.create.topics": "false"]).properties, logHandler: logHandler)
    }

    deinit { core.client.requestStop() }

    /// Creates topics. A topic that already exists is reported as ``TopicCreation/alreadyExisted``,
    /// not as an error, so this can "ensure" topics at start-up.
    ///
    /// - Throws: the first per-topic failure other than TOPIC_ALREADY_EXISTS (invalid partition
    ///   count, replication factor above the broker count, unknown config...), or `.timeout`.
    @discardableResult
    public func createTopics(_ topics: [NewTopic], timeout: Duration = .seconds(30)) async throws -> [String: TopicCreation] {
        guard !topics.isEmpty else { return [:] }
        let core = self.core
        let ms = milliseconds(timeout)
        return try await core.client.blocking { () throws(KafkaError) in try core.createTopicsBlocking(topics, timeoutMilliseconds: ms) }
    }

    /// Brokers and all topics (`rd_kafka_metadata`).
    public func metadata(timeout: Duration = .seconds(10)) async throws -> KafkaClusterMetadata {
        let client = core.client
        let ms = milliseconds(timeout)
        return try await client.blocking { () throws(KafkaError) in try client.metadataBlocking(timeoutMilliseconds: ms) }
    }

    /// One topic's metadata.
    ///
    /// - Throws: `.unknownTopicOrPartition` if the cluster has no such topic.
    public func describeTopic(_ name: String, timeout: Duration = .seconds(10)) async throws -> KafkaTopicMetadata {
        let metadata = try await self.metadata(timeout: timeout)
        guard let topic = metadata.topic(name), topic.error != "UNKNOWN_TOPIC_OR_PART" else {
            throw KafkaError(kind: .unknownTopicOrPartition, codeName: "UNKNOWN_TOPIC_OR_PART", message: "the topic does not exist", context: ["topic": name])
        }
        return topic
    }

    /// A topic's configuration as the broker reports it (DescribeConfigs).
    public func describeTopicConfig(_ name: String, timeout: Duration = .seconds(10)) async throws -> [String: TopicConfigEntry] {
        let core = self.core
        let ms = milliseconds(timeout)
        return try await core.client.blocking { () throws(KafkaError) in try core.describeTopicConfigBlocking(name, timeoutMilliseconds: ms) }
    }

    /// Low and high watermark of a partition (the high watermark is the next offset to be written).
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> (low: Int64, high: Int64) {
        let client = core.client
        let ms = milliseconds(timeout)
        return try await client.blocking { () throws(KafkaError) in try client.watermarksBlocking(partition, timeoutMilliseconds: ms) }
    }

    /// The bootstrap servers of the mock cluster librdkafka creates when the configuration has
    /// `test.mock.num.brokers` (tests only), or `nil`.
    public var implicitMockBootstrapServers: String? { core.client.implicitMockBootstrapServers }
}
