import Foundation
import Kafka

/// How Levee reaches its Kafka cluster: bootstrap servers, extra librdkafka properties (security,
/// timeouts; passed through unchanged), and the topic layout. Every Levee component (client,
/// worker, reconciler, trace, status) is built from one of these.
public struct KafkaConnection: Sendable {
    public var bootstrapServers: String
    /// librdkafka properties added to every client (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    public var properties: [String: String]
    public var layout: TopicLayout

    public init(bootstrapServers: String, properties: [String: String] = [:], layout: TopicLayout = TopicLayout()) {
        self.bootstrapServers = bootstrapServers
        self.properties = properties
        self.layout = layout
    }

    /// A configuration for one client: the connection's properties under `extra`.
    public func configuration(_ extra: [String: String] = [:]) -> KafkaConfiguration {
        var properties = self.properties
        properties["bootstrap.servers"] = bootstrapServers
        for (key, value) in extra where properties[key] == nil { properties[key] = value }
        return KafkaConfiguration(properties)
    }
}

/// Kafka's murmur2 partitioner (the Java client's default and librdkafka's `murmur2_random` for
/// keyed records): lets a reader find the partition of a job id without asking the cluster.
public enum KeyPartitioner {
    public static func murmur2(_ data: [UInt8]) -> UInt32 {
        let m: UInt32 = 0x5bd1_e995
        var h: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: data.count)
        let blocks = data.count / 4
        for i in 0..<blocks {
            let j = i * 4
            var k = UInt32(data[j]) | UInt32(data[j + 1]) << 8 | UInt32(data[j + 2]) << 16 | UInt32(data[j + 3]) << 24
            k &*= m
            k ^= k >> 24
            k &*= m
            h &*= m
            h ^= k
        }
        let tail = blocks * 4
        switch data.count & 3 {
        case 3:
            h ^= UInt32(data[tail + 2]) << 16
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h &*= m
        case 2:
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h &*= m
        case 1:
            h ^= UInt32(data[tail])
            h &*= m
        default:
            break
        }
        h ^= h >> 13
        h &*= m
        h ^= h >> 15
        return h
    }

    /// The partition a key goes to among `partitions`.
    public static func partition(forKey key: [UInt8], partitions: Int) -> Int32 {
        Int32((murmur2(key) & 0x7fff_ffff) % UInt32(max(partitions, 1)))
    }

    /// The partition of a job id's records (every Levee topic is keyed by the job id's text).
    public static func partition(for jobID: JobID, partitions: Int) -> Int32 {
        partition(forKey: Array(jobID.description.utf8), partitions: partitions)
    }
}
