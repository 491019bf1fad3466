import Foundation
import Kafka

/// The cluster side of `levee doctor`: brokers, topics, replication, transactions.
struct KafkaChecks {
    let configuration: DoctorConfiguration

    var connection: KafkaConnection { configuration.connection }
    var layout: TopicLayout { connection.layout }

    /// Topics whose records are kept per key (the latest per job or worker).
    static func wantsCompaction(_ spec: TopicLayout.Spec) -> Bool { spec.configs["cleanup.policy"] == "compact" }

    func run() async -> [DoctorCheck] {
        let bootstrap = connection.bootstrapServers
        guard !bootstrap.isEmpty else {
            return [DoctorCheck("brokers", .fail, "no bootstrap servers configured",
                                fix: "pass --brokers host:port[,host:port] or set LEVEE_BROKERS")] + skipped("no brokers configured")
        }
        let admin: KafkaAdmin
        do {
            admin = try KafkaAdmin(configuration: connection.configuration())
        } catch {
            return [DoctorCheck("brokers", .fail, "the Kafka client settings are invalid: \(error)",
                                fix: "correct the -X / LEVEE_KAFKA_* properties named above")] + skipped("the client settings are invalid")
        }
        let started = ContinuousClock.now
        let metadata: KafkaClusterMetadata
        do {
            metadata = try await admin.metadata(timeout: configuration.timeout)
        } catch {
            return [DoctorCheck("brokers", .fail, "no metadata from \(bootstrap) within \(seconds(configuration.timeout)) s: \(error)",
                                fix: "check that \(bootstrap) is the right address (LEVEE_BROKERS), that the brokers' advertised.listeners are reachable from this host, and the security settings (LEVEE_KAFKA_SECURITY_PROTOCOL, LEVEE_KAFKA_SASL_*, LEVEE_KAFKA_SSL_*)")]
                + skipped("the brokers did not answer")
        }
        let elapsed = Int((ContinuousClock.now - started).milliseconds)
        let brokerList = metadata.brokers.sorted { $0.id < $1.id }.map { "\($0.id)@\($0.host):\($0.port)" }
        var checks = [DoctorCheck("brokers", .ok, "\(metadata.brokers.count) broker\(metadata.brokers.count == 1 ? "" : "s") answered in \(elapsed) ms: \(brokerList.joined(separator: ", "))")]

        // Topic configs: one probe first, because some clusters (librdkafka's embedded mock) do not
        // answer DescribeConfigs at all, and each topic would otherwise wait out the timeout.
        var configs: [String: [String: TopicConfigEntry]] = [:]
        var configErrors: [String: String] = [:]
        var configsUnavailable: String?
        for spec in layout.specs where metadata.topic(spec.name).map({ $0.error == nil }) ?? false {
            if configsUnavailable != nil { break }
            do {
                configs[spec.name] = try await admin.describeTopicConfig(spec.name, timeout: min(configuration.timeout, .seconds(5)))
            } catch {
                if configs.isEmpty && configErrors.isEmpty { configsUnavailable = "\(error)" } else { configErrors[spec.name] = "\(error)" }
            }
        }
        for spec in layout.specs {
            var check = topicCheck(spec, metadata: metadata, configs: configs[spec.name], brokers: metadata.brokers.count)
            if let error = configErrors[spec.name], check.status == .ok {
                check.status = .warn
                check.detail += "; its configs could not be read: \(error)"
                check.fix = "grant the client's principal DESCRIBE_CONFIGS on the topic, then run levee doctor again"
            }
            checks.append(check)
        }
        if let configsUnavailable {
            checks.append(DoctorCheck("topic configs", .skip,
                                      "the cluster did not answer DescribeConfigs, so cleanup.policy and retention were not checked (librdkafka's embedded mock cluster has no topic configs; on Kafka the principal needs DESCRIBE_CONFIGS): \(configsUnavailable)"))
        }
        checks.append(replicationCheck(metadata: metadata, configs: configs))
        checks.append(await transactionCheck())
        checks.append(recordSizeCheck(configs: configs))
        return checks
    }

    /// How large a dead letter (and any other record a worker writes) may be, from the producer's
    /// `message.max.bytes` and the topics' `max.message.bytes`: a poison record too large to be
    /// kept whole is kept as its first bytes with its size and SHA-256.
    func recordSizeCheck(configs: [String: [String: TopicConfigEntry]]) -> DoctorCheck {
        var topicMax: [String: Int] = [:]
        for (topic, entries) in configs {
            if let value = entries["max.message.bytes"]?.value, let bytes = Int(value) { topicMax[topic] = bytes }
        }
        let limits = RecordLimits(producerProperties: connection.properties, topicMaxBytes: topicMax)
        let dlq = layout.deadLetters
        let bound = limits.limit(for: dlq)
        var detail = "dead letters up to \(bound) bytes (producer message.max.bytes \(limits.producerMaxBytes)"
        detail += topicMax[dlq].map { ", \(dlq) max.message.bytes \($0))" } ?? ", \(dlq) max.message.bytes not known)"
        detail += "; a poison record over about \(bound / 4 * 3) bytes is dead-lettered as its first bytes with its size and sha256, the whole staying in its source topic until retention"
        if let jobs = topicMax[layout.jobs], jobs / 4 * 3 > bound {
            detail += "; \(layout.jobs) takes records up to \(jobs) bytes, so its largest poison records are kept in part"
        }
        return DoctorCheck("record sizes", .ok, detail)
    }

    private func skipped(_ reason: String) -> [DoctorCheck] {
        layout.specs.map { DoctorCheck("topic \($0.name)", .skip, reason) }
            + [DoctorCheck("replication", .skip, reason), DoctorCheck("transactions", .skip, reason)]
    }

    // MARK: Topics

    /// `levee topics create` with this connection's settings.
    func createCommand(replicationFactor: Int) -> String {
        var words = ["levee topics create --brokers \(connection.bootstrapServers)"]
        if !layout.prefix.isEmpty { words.append("--prefix \(layout.prefix)") }
        words.append("--partitions \(layout.partitions) --replication-factor \(replicationFactor)")
        return words.joined(separator: " ")
    }

    func alterConfigCommand(_ topic: String, _ setting: String) -> String {
        "kafka-configs.sh --bootstrap-server \(connection.bootstrapServers) --alter --entity-type topics --entity-name \(topic) --add-config \(setting)"
    }

    func topicCheck(_ spec: TopicLayout.Spec, metadata: KafkaClusterMetadata, configs: [String: TopicConfigEntry]?, brokers: Int) -> DoctorCheck {
        let name = "topic \(spec.name)"
        let replication = min(3, max(1, brokers))
        guard let topic = metadata.topic(spec.name), topic.error != "UNKNOWN_TOPIC_OR_PART" else {
            let policy = spec.configs.sorted { $0.key < $1.key }.map { "--config \($0.key)=\($0.value)" }.joined(separator: " ")
            return DoctorCheck(name, .fail, "missing (\(spec.purpose))",
                               fix: "\(createCommand(replicationFactor: replication))   (or: kafka-topics.sh --bootstrap-server \(connection.bootstrapServers) --create --topic \(spec.name) --partitions \(spec.partitions) --replication-factor \(replication) \(policy))")
        }
        if let error = topic.error {
            return DoctorCheck(name, .fail, "the cluster reports \(error) for it",
                               fix: "check the brokers' logs; the topic may be being deleted or its leaders elected — run levee doctor again in a minute")
        }
        var problems: [(status: DoctorCheck.Status, text: String, fix: String)] = []
        if topic.partitionCount != spec.partitions {
            let found = topic.partitionCount
            let flag = spec.name == layout.deadLetters ? "the --partitions levee.jobs was created with" : "--partitions \(found)"
            var fix = "if the cluster is right, run Levee with \(flag) (LEVEE_PARTITIONS); "
            if found < spec.partitions {
                fix += "else kafka-topics.sh --bootstrap-server \(connection.bootstrapServers) --alter --topic \(spec.name) --partitions \(spec.partitions) (before jobs flow: old job ids would map to other partitions) or create the topics under a new --prefix"
            } else {
                fix += "partitions cannot be removed: create the topics under a new --prefix with \(createCommand(replicationFactor: replication))"
            }
            problems.append((.fail, "has \(found) partitions; the layout wants \(spec.partitions)", fix))
        }
        let leaderless = topic.partitions.filter { $0.leader < 0 || $0.error != nil }.map(\.id).sorted()
        if !leaderless.isEmpty {
            problems.append((.fail, "partitions without a leader: \(leaderless.map(String.init).joined(separator: ","))",
                             "a broker holding them is down: check `levee status` / the brokers, and unclean leader election settings"))
        }
        var notes: [String] = []
        if let configs {
            let policy = configs["cleanup.policy"]?.value ?? "delete"
            let policies = Set(policy.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            if Self.wantsCompaction(spec) {
                if !policies.contains("compact") {
                    let why = spec.name == layout.results
                        ? "results are deleted after retention and duplicates are never compacted away: readers lose terminal records"
                        : "old records are deleted instead of keeping the latest per key"
                    problems.append((.fail, "cleanup.policy=\(policy), not compact: \(why)", alterConfigCommand(spec.name, "cleanup.policy=compact")))
                } else if policies.contains("delete") {
                    problems.append((.warn, "cleanup.policy=\(policy): records also expire after retention.ms",
                                     alterConfigCommand(spec.name, "cleanup.policy=compact")))
                } else {
                    notes.append("compacted")
                }
            } else {
                if policies.contains("compact") && !policies.contains("delete") {
                    problems.append((.warn, "cleanup.policy=\(policy): this topic is meant to expire by time",
                                     alterConfigCommand(spec.name, "cleanup.policy=delete")))
                }
                let retention = configs["retention.ms"]?.value.flatMap { Int64($0) }
                if let retention, retention < 0 {
                    problems.append((.warn, "retention.ms=-1: kept forever, the topic grows without bound",
                                     alterConfigCommand(spec.name, "retention.ms=\(spec.configs["retention.ms"] ?? TopicLayout.week)")))
                } else if let retention {
                    let days = Double(retention) / 86_400_000
                    let isDefault = configs["retention.ms"]?.isDefault ?? false
                    notes.append("retention \(days >= 1 ? "\(Int(days.rounded())) d" : "\(retention / 3_600_000) h")\(isDefault ? " (broker default)" : "")")
                    if retention < 3_600_000 {
                        problems.append((.warn, "retention.ms=\(retention): records may expire before they are processed or traced",
                                         alterConfigCommand(spec.name, "retention.ms=\(spec.configs["retention.ms"] ?? TopicLayout.week)")))
                    }
                }
            }
        }
        let summary = "\(topic.partitionCount) partition\(topic.partitionCount == 1 ? "" : "s")" + (notes.isEmpty ? "" : ", " + notes.joined(separator: ", "))
        guard !problems.isEmpty else { return DoctorCheck(name, .ok, summary) }
        let status: DoctorCheck.Status = problems.contains { $0.status == .fail } ? .fail : .warn
        let detail = problems.map(\.text).joined(separator: "; ")
        let fixes = problems.filter { $0.status == status }.map(\.fix)
        return DoctorCheck(name, status, detail, fix: fixes.joined(separator: "; and "))
    }

    // MARK: Replication

    /// What one topic's replication looks like.
    struct TopicReplication: Sendable, Equatable {
        var topic: String
        /// The smallest replica count among its partitions.
        var replicationFactor: Int
        /// `min.insync.replicas`, when the cluster reported configs.
        var minInSyncReplicas: Int?
        /// Partitions whose in-sync replicas are fewer than their replicas.
        var underReplicated: [Int32]
    }

    func replicationCheck(metadata: KafkaClusterMetadata, configs: [String: [String: TopicConfigEntry]]) -> DoctorCheck {
        let topics: [TopicReplication] = layout.specs.compactMap { spec in
            guard let topic = metadata.topic(spec.name), topic.error == nil, !topic.partitions.isEmpty else { return nil }
            return TopicReplication(
                topic: spec.name,
                replicationFactor: topic.partitions.map(\.replicas.count).min() ?? 0,
                minInSyncReplicas: configs[spec.name]?["min.insync.replicas"]?.value.flatMap { Int($0) },
                underReplicated: topic.partitions.filter { $0.inSyncReplicas.count < $0.replicas.count }.map(\.id).sorted())
        }
        return Self.evaluateReplication(brokers: metadata.brokers.count, topics: topics, bootstrap: connection.bootstrapServers)
    }

    /// The rules: one broker is for development; a replication factor above the broker count cannot
    /// be placed; `min.insync.replicas` ≥ the replication factor stops all writes when one broker is
    /// down (acks=all); 3 replicas with min.insync.replicas 2 is the production setting.
    static func evaluateReplication(brokers: Int, topics: [TopicReplication], bootstrap: String) -> DoctorCheck {
        guard !topics.isEmpty else { return DoctorCheck("replication", .skip, "none of Levee's topics exist yet") }
        let factors = Set(topics.map(\.replicationFactor)).sorted()
        let isrs = Set(topics.compactMap(\.minInSyncReplicas)).sorted()
        var summary = "\(brokers) broker\(brokers == 1 ? "" : "s"), replication factor \(factors.map(String.init).joined(separator: "/"))"
        summary += isrs.isEmpty ? ", min.insync.replicas not reported" : ", min.insync.replicas \(isrs.map(String.init).joined(separator: "/"))"
        if brokers <= 1 {
            return DoctorCheck("replication", .warn, summary + ": a single broker is fine for development only (one failure loses data and stops the pipeline)",
                               fix: "in production run 3 or more brokers, topics with --replication-factor 3 and min.insync.replicas=2")
        }
        var fails: [String] = [], warns: [String] = [], fixes: [String] = []
        for t in topics {
            if t.replicationFactor > brokers {
                fails.append("\(t.topic) has \(t.replicationFactor) replicas on \(brokers) brokers")
            } else if let isr = t.minInSyncReplicas, isr >= t.replicationFactor {
                fails.append("\(t.topic): min.insync.replicas \(isr) ≥ replication factor \(t.replicationFactor), so one broker down stops every write")
                fixes.append("kafka-configs.sh --bootstrap-server \(bootstrap) --alter --entity-type topics --entity-name \(t.topic) --add-config min.insync.replicas=\(max(1, t.replicationFactor - 1))")
            } else if t.replicationFactor < min(3, brokers) {
                warns.append("\(t.topic) has \(t.replicationFactor) replica\(t.replicationFactor == 1 ? "" : "s") though \(brokers) brokers could hold \(min(3, brokers))")
            } else if let isr = t.minInSyncReplicas, isr < 2 {
                warns.append("\(t.topic): min.insync.replicas \(isr) lets an acknowledged write live on one broker only")
                fixes.append("kafka-configs.sh --bootstrap-server \(bootstrap) --alter --entity-type topics --entity-name \(t.topic) --add-config min.insync.replicas=2")
            }
            if !t.underReplicated.isEmpty {
                warns.append("\(t.topic) partitions \(t.underReplicated.map(String.init).joined(separator: ",")) are under-replicated (a broker is down or lagging)")
            }
        }
        if fails.contains(where: { $0.contains("replicas on") }) || warns.contains(where: { $0.contains("brokers could hold") }) {
            fixes.append("the replication factor cannot be changed in place: reassign partitions (kafka-reassign-partitions.sh) or create the topics under a new --prefix with levee topics create --replication-factor \(min(3, brokers))")
        }
        if !fails.isEmpty {
            return DoctorCheck("replication", .fail, summary + ": " + (fails + warns).joined(separator: "; "), fix: fixes.joined(separator: "; and "))
        }
        if !warns.isEmpty {
            return DoctorCheck("replication", .warn, summary + ": " + warns.joined(separator: "; "),
                               fix: fixes.isEmpty ? "bring the missing broker back; check `levee status`" : fixes.joined(separator: "; and "))
        }
        return DoctorCheck("replication", .ok, summary)
    }

    // MARK: Transactions

    /// Registers a throwaway `transactional.id` with the transaction coordinator (InitProducerId),
    /// bounded by the timeout: what every exactly-once worker does at start.
    func transactionCheck() async -> DoctorCheck {
        guard configuration.checkTransactions else {
            return DoctorCheck("transactions", .skip, "workers run --delivery at-least-once (no transactions)")
        }
        let id = "levee-doctor-\(UUID().uuidString.lowercased())"
        let timeoutMs = Int(configuration.transactionTimeout.milliseconds)
        let producer: TransactionalProducer
        do {
            producer = try TransactionalProducer(configuration: connection.configuration(
                ["transactional.id": id, "transaction.timeout.ms": String(timeoutMs)]))
        } catch {
            return DoctorCheck("transactions", .fail, "cannot create a transactional producer: \(error)",
                               fix: "correct the -X / LEVEE_KAFKA_* properties named above")
        }
        let started = ContinuousClock.now
        do {
            try await producer.initTransactions(timeout: configuration.timeout)
            try producer.beginTransaction()
            try await producer.commitTransaction(timeout: configuration.timeout)
            await producer.close()
            let elapsed = Int((ContinuousClock.now - started).milliseconds)
            return DoctorCheck("transactions", .ok, "the transaction coordinator registered a transactional.id and committed an empty transaction in \(elapsed) ms (transaction.timeout.ms \(timeoutMs))")
        } catch {
            await producer.close()
            let text = "\(error)"
            let fallback = "; or run workers with --delivery at-least-once (no transactions; readers keep the first result per job)"
            let fix: String
            if text.contains("INVALID_TRANSACTION_TIMEOUT") {
                fix = "the brokers' transaction.max.timeout.ms is below \(timeoutMs): raise it, or lower the workers' with LEVEE_KAFKA_TRANSACTION_TIMEOUT_MS"
            } else if text.contains("AUTHORIZATION") {
                fix = "grant the client's principal WRITE and DESCRIBE on TransactionalId (prefix levee-, or the worker ids) and IDEMPOTENT_WRITE on the cluster (kafka-acls.sh)" + fallback
            } else {
                fix = "the transaction coordinator is not available: the brokers need transaction.state.log.replication.factor and transaction.state.log.min.isr no larger than the broker count, and transactions must not be disabled (transaction.coordinator / version)" + fallback
            }
            return DoctorCheck("transactions", .fail, "InitProducerId for a throwaway transactional.id failed within \(seconds(configuration.timeout)) s: \(text)", fix: fix)
        }
    }
}

func seconds(_ duration: Duration) -> String {
    let ms = duration.milliseconds
    return ms.truncatingRemainder(dividingBy: 1000) == 0 ? String(Int(ms / 1000)) : String(format: "%.1f", ms / 1000)
}
