import Foundation
import Kafka

/// The largest record a worker may write to each of its output topics (results, trace, retry,
/// dead letters), so that nothing a user can put in a job makes the worker write a record the
/// broker refuses.
///
/// A record is bounded twice: by the producer's `message.max.bytes` (librdkafka refuses a larger
/// key + value + headers before sending) and by the topic's `max.message.bytes` (the broker
/// refuses a larger record batch). The topic's value is read with DescribeConfigs at start;
/// brokers that do not answer it (the embedded mock) leave the producer's bound alone.
public struct RecordLimits: Sendable, Equatable {
    /// librdkafka's default `message.max.bytes`.
    public static let librdkafkaDefault = 1_000_000
    /// Room kept below a topic's `max.message.bytes` for the record batch and record headers
    /// Kafka adds around key and value (61 bytes of batch header, varints, header names).
    public static let batchOverhead = 512

    /// The producer's `message.max.bytes`.
    public var producerMaxBytes: Int
    /// Topic → its `max.message.bytes`, where the broker said.
    public var topicMaxBytes: [String: Int]

    public init(producerMaxBytes: Int = RecordLimits.librdkafkaDefault, topicMaxBytes: [String: Int] = [:]) {
        self.producerMaxBytes = producerMaxBytes
        self.topicMaxBytes = topicMaxBytes
    }

    /// The producer's bound from its properties (`message.max.bytes`, librdkafka's default when unset).
    public init(producerProperties: [String: String], topicMaxBytes: [String: Int] = [:]) {
        let configured = producerProperties["message.max.bytes"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        self.init(producerMaxBytes: configured ?? Self.librdkafkaDefault, topicMaxBytes: topicMaxBytes)
    }

    /// The most bytes of key, value and headers a record to `topic` may have.
    public func limit(for topic: String) -> Int {
        var limit = producerMaxBytes
        if let topicMax = topicMaxBytes[topic] { limit = min(limit, topicMax) }
        return max(0, limit - Self.batchOverhead)
    }

    /// Key, value and headers of `record`: what both bounds measure.
    public static func size(of record: ProducerRecord) -> Int {
        (record.key?.count ?? 0) + (record.value?.count ?? 0)
            + record.headers.reduce(0) { $0 + $1.name.utf8.count + ($1.value?.count ?? 0) }
    }

    public func fits(_ record: ProducerRecord) -> Bool { Self.size(of: record) <= limit(for: record.topic) }

    /// Reads `max.message.bytes` of `topics` (each bounded by `timeout`); a topic whose config the
    /// broker does not answer keeps only the producer's bound, and after one such topic the rest
    /// are not asked (the embedded cluster answers none).
    public static func read(_ admin: KafkaAdmin, producerProperties: [String: String], topics: [String],
                            timeout: Duration = .seconds(5)) async -> RecordLimits {
        var found: [String: Int] = [:]
        for topic in topics {
            guard let configs = try? await admin.describeTopicConfig(topic, timeout: timeout) else { break }
            if let value = configs["max.message.bytes"]?.value, let bytes = Int(value) { found[topic] = bytes }
        }
        return RecordLimits(producerProperties: producerProperties, topicMaxBytes: found)
    }
}

extension String {
    /// At most `maxBytes` bytes of UTF-8, cut at a character boundary, with a note of how much
    /// was cut. Used for texts that come from the user (error messages naming their input).
    func clipped(toBytes maxBytes: Int) -> String {
        let utf8 = self.utf8
        guard utf8.count > maxBytes else { return self }
        var end = utf8.index(utf8.startIndex, offsetBy: max(0, maxBytes))
        while end > utf8.startIndex, String.Index(end, within: self) == nil { end = utf8.index(before: end) }
        let kept = String(self[self.startIndex..<end])
        return kept + "… (\(utf8.count - kept.utf8.count) more bytes cut)"
    }
}
