/// The names and settings of Levee's topics, with a configurable prefix so several pipelines
/// (or test runs) share a cluster. See ARCHITECTURE.md, "Topics".
public struct TopicLayout: Sendable, Equatable {
    public var prefix: String
    /// Partitions of the job, retry, results, trace and control topics: the most workers that can share the load.
    public var partitions: Int
    public var replicationFactor: Int

    public init(prefix: String = "", partitions: Int = 12, replicationFactor: Int = 1) {
        self.prefix = prefix
        self.partitions = partitions
        self.replicationFactor = replicationFactor
    }

    public var jobs: String { prefix + "levee.jobs" }
    public var retry: String { prefix + "levee.jobs.retry" }
    public var results: String { prefix + "levee.results" }
    public var deadLetters: String { prefix + "levee.dlq" }
    public var trace: String { prefix + "levee.trace" }
    public var workers: String { prefix + "levee.workers" }
    public var control: String { prefix + "levee.control" }

    /// One topic's name, partition count and configuration.
    public struct Spec: Sendable, Equatable {
        public var name: String
        public var partitions: Int
        public var configs: [String: String]
        public var purpose: String
    }

    static let week = String(7 * 24 * 3600 * 1000)
    static let month = String(30 * 24 * 3600 * 1000)

    /// Every topic with the configuration the design gives it.
    public var specs: [Spec] {
        [
            Spec(name: jobs, partitions: partitions, configs: ["cleanup.policy": "delete", "retention.ms": Self.week],
                 purpose: "job envelopes"),
            Spec(name: retry, partitions: partitions, configs: ["cleanup.policy": "delete", "retention.ms": Self.week],
                 purpose: "jobs waiting for a retry (not_before)"),
            Spec(name: results, partitions: partitions, configs: ["cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"],
                 purpose: "exactly one terminal record per job"),
            Spec(name: deadLetters, partitions: max(1, partitions / 4), configs: ["cleanup.policy": "delete", "retention.ms": Self.month],
                 purpose: "poison jobs with their original bytes"),
            Spec(name: trace, partitions: partitions, configs: ["cleanup.policy": "delete", "retention.ms": Self.week],
                 purpose: "trace events, one ordered stream per job"),
            Spec(name: workers, partitions: 1, configs: ["cleanup.policy": "compact"],
                 purpose: "worker heartbeats"),
            Spec(name: control, partitions: partitions, configs: ["cleanup.policy": "compact"],
                 purpose: "cancellations"),
        ]
    }
}
