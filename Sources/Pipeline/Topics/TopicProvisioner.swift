import Kafka

/// Creates Levee's topics, idempotently: a topic already there is left as it is and reported,
/// with a warning when its partition count differs from the layout.
public enum TopicProvisioner {
    /// What happened to one topic.
    public struct Outcome: Sendable, Equatable, Codable {
        public var topic: String
        public var partitions: Int
        public var created: Bool
        /// e.g. "has 4 partitions; the layout wants 12 (partitions cannot be changed here)".
        public var warning: String?
    }

    /// Creates the topics through the Admin API (real Kafka, noida-db).
    public static func ensureTopics(_ connection: KafkaConnection, timeout: Duration = .seconds(30)) async throws -> [Outcome] {
        let admin = try KafkaAdmin(configuration: connection.configuration())
        let layout = connection.layout
        // Ask only for the topics that are missing: a cluster that has them all (the embedded one,
        // whose Admin API cannot create topics, made by `levee broker`) needs no CreateTopics call.
        let existing = Set(try await admin.metadata(timeout: timeout).topics.filter { $0.error == nil }.map(\.name))
        let missing = layout.specs.filter { !existing.contains($0.name) }
        let created = missing.isEmpty ? [:] : try await admin.createTopics(missing.map {
            NewTopic(name: $0.name, partitions: Int32($0.partitions), replicationFactor: Int16(layout.replicationFactor), configs: $0.configs)
        }, timeout: timeout)
        var outcomes: [Outcome] = []
        for spec in layout.specs {
            let existing = try await admin.describeTopic(spec.name, timeout: timeout)
            var warning: String?
            if existing.partitionCount != spec.partitions {
                warning = "has \(existing.partitionCount) partitions; the layout wants \(spec.partitions)"
            }
            var wasCreated = false
            if case .created = created[spec.name] { wasCreated = true }
            outcomes.append(Outcome(topic: spec.name, partitions: existing.partitionCount, created: wasCreated, warning: warning))
        }
        return outcomes
    }

    /// Creates the topics on an embedded (mock) cluster, whose Admin API cannot create topics.
    /// The mock has no topic configs: compaction is not emulated there.
    public static func ensureTopics(_ layout: TopicLayout, on cluster: EmbeddedCluster) throws -> [Outcome] {
        try layout.specs.map { spec in
            try cluster.createTopic(spec.name, partitions: spec.partitions)
            return Outcome(topic: spec.name, partitions: spec.partitions, created: true, warning: nil)
        }
    }
}
