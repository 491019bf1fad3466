/// A Kafka cluster inside this process: librdkafka's mock cluster, with fault injection.
///
/// Any Kafka client can connect to `bootstrapServers` (it listens on loopback TCP ports), including
/// other processes such as kcat. It is meant for development and tests:
/// - **Memory only.** Nothing is written to disk; everything is gone when the object is released.
///   It keeps only about 5 MiB per partition (older records are dropped), so spread big loads
///   over several partitions. No compaction.
/// - **Transactions are not enforced.** Transactional calls succeed, but read_committed consumers
///   also see aborted and still-open transactional records, and offsets sent with a transaction
///   are discarded. Never assert transaction outcomes against it; use a real broker (noida-db,
///   Apache Kafka) for that. See KAFKA-HERE.md.
/// - **Experimental upstream.** librdkafka marks the mock-cluster API as experimental and outside
///   its API/ABI stability guarantees.
/// - Admin CreateTopics does not work against it (times out waiting for a controller): create
///   topics with `createTopic(_:partitions:replicationFactor:)`. Clients that produce to an unknown
///   topic get it auto-created with 4 partitions.
///
/// The cluster is shut down when the last reference goes away.
public final class EmbeddedCluster: Sendable {
    private let mock: MockCluster

    /// The brokers' addresses, comma separated, for a client's `bootstrap.servers`.
    public let bootstrapServers: String
    /// The brokers' ids: 1 through the number of brokers.
    public let brokerIDs: [Int32]

    /// Starts a cluster of `brokers` brokers listening on random loopback ports.
    public init(brokers: Int = 1) throws {
        mock = try MockCluster(brokers: brokers)
        bootstrapServers = mock.bootstrapServers
        brokerIDs = (1...brokers).map { Int32($0) }
    }

    /// Creates a topic (the mock's own API; Admin CreateTopics does not work on the mock).
    /// `replicationFactor` is checked against the broker count, but librdkafka 2.0.2's mock then
    /// places replicas by its own default (every broker, up to 3), whatever the value.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) throws {
        let context = ["topic": name, "partitions": String(partitions), "replication_factor": String(replicationFactor)]
        if let problem = Self.topicNameProblem(name) {
            throw KafkaError(kind: .configuration, message: "invalid topic name: \(problem)", context: context)
        }
        guard partitions >= 1, partitions <= 100_000 else {
            throw KafkaError(kind: .configuration, message: "a topic needs between 1 and 100000 partitions", context: context)
        }
        guard replicationFactor >= 1, replicationFactor <= brokerIDs.count else {
            throw KafkaError(kind: .configuration,
                             message: "replication factor must be between 1 and the number of brokers (\(brokerIDs.count))",
                             context: context)
        }
        try check(mock.createTopic(name, partitions: Int32(partitions), replicationFactor: Int32(replicationFactor)),
                  "could not create topic", context)
    }

    /// Makes a broker unreachable: its listener closes its connections and refuses new ones.
    public func setBrokerDown(_ id: Int32) throws {
        try checkBroker(id, "set broker down")
        try check(mock.setBrokerDown(id), "could not set broker down", ["broker": String(id)])
    }

    /// Brings a broker taken down with `setBrokerDown(_:)` back.
    public func setBrokerUp(_ id: Int32) throws {
        try checkBroker(id, "set broker up")
        try check(mock.setBrokerUp(id), "could not set broker up", ["broker": String(id)])
    }

    /// Delays every response of one broker by `milliseconds` (0 removes the delay).
    public func setRoundTripTime(broker id: Int32, milliseconds: Int) throws {
        let context = ["broker": String(id), "milliseconds": String(milliseconds)]
        try checkBroker(id, "set round-trip time")
        guard milliseconds >= 0, milliseconds <= Int(Int32.max) else {
            throw KafkaError(kind: .configuration, message: "round-trip time must be 0 or more milliseconds", context: context)
        }
        try check(mock.setRoundTripTime(broker: id, milliseconds: Int32(milliseconds)), "could not set round-trip time", context)
    }

    /// Moves the leadership of one partition to `broker` (creating the topic if it does not exist).
    public func setPartitionLeader(topic: String, partition: Int32, broker: Int32) throws {
        try checkBroker(broker, "set partition leader")
        try check(mock.setPartitionLeader(topic: topic, partition: partition, broker: broker),
                  "could not set partition leader", ["topic": topic, "partition": String(partition), "broker": String(broker)])
    }

    /// Makes the next `errors.count` requests of type `api` to any broker fail, one error each, in
    /// order. `_TRANSPORT` makes the broker drop the connection instead of answering.
    public func pushRequestErrors(api: KafkaAPIKey, errors: [KafkaErrorCode]) {
        guard !errors.isEmpty else { return }
        mock.pushRequestErrors(api: api.rawValue, errors: errors.map(\.code))
    }

    /// Same as `pushRequestErrors(api:errors:)` with librdkafka's error names
    /// (e.g. `["NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT"]`).
    public func pushRequestErrors(api: KafkaAPIKey, errorNames: [String]) throws {
        pushRequestErrors(api: api, errors: try errorNames.map { try KafkaErrorCode(named: $0) })
    }

    /// Drops errors pushed with `pushRequestErrors(api:errors:)` that have not been used yet.
    public func clearRequestErrors(api: KafkaAPIKey) {
        mock.clearRequestErrors(api: api.rawValue)
    }

    /// Makes the next `errors.count` requests of type `api` to one broker fail, in order, each
    /// answered after `roundTripMilliseconds`. Broker errors take precedence over cluster-wide ones.
    public func pushRequestErrors(broker: Int32, api: KafkaAPIKey, errors: [KafkaErrorCode], roundTripMilliseconds: Int = 0) throws {
        let context = ["broker": String(broker), "api": api.name]
        try checkBroker(broker, "push request errors")
        guard roundTripMilliseconds >= 0, roundTripMilliseconds <= Int(Int32.max) else {
            throw KafkaError(kind: .configuration, message: "round-trip time must be 0 or more milliseconds", context: context)
        }
        for error in errors {
            guard let result = mock.pushBrokerRequestError(broker: broker, api: api.rawValue, error: error.code,
                                                           roundTripMilliseconds: Int32(roundTripMilliseconds)) else {
                throw KafkaError(kind: .mockCluster,
                                 message: "per-broker request errors are not available on this platform (librdkafka offers them only as a C variadic function)",
                                 context: context)
            }
            try check(result, "could not push request error", context.merging(["error": error.name]) { $1 })
        }
    }

    /// How many errors pushed for one broker and API are still waiting to be used.
    public func pendingRequestErrors(broker: Int32, api: KafkaAPIKey) throws -> Int {
        try checkBroker(broker, "count request errors")
        let (count, error) = mock.brokerErrorStackCount(broker: broker, api: api.rawValue)
        try check(error, "could not count request errors", ["broker": String(broker), "api": api.name])
        return count
    }

    private func checkBroker(_ id: Int32, _ operation: String) throws {
        guard brokerIDs.contains(id) else {
            let unknown = try? KafkaErrorCode(named: "_UNKNOWN_BROKER")
            throw KafkaError(kind: .mockCluster, code: unknown?.code, codeName: unknown?.name,
                             message: "no broker \(id) in this cluster (brokers: \(brokerIDs.map(String.init).joined(separator: ", ")))",
                             context: ["broker": String(id), "operation": operation])
        }
    }

    private func check(_ code: Int32, _ message: String, _ context: [String: String]) throws {
        guard code != 0 else { return }
        let error = KafkaErrorCode(code: code)
        throw KafkaError(kind: .mockCluster, code: code, codeName: error.name, message: "\(message): \(error.description)", context: context)
    }

    /// Kafka's rules for topic names, so a bad name fails here with a reason, not later in a client.
    static func topicNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "empty" }
        if name == "." || name == ".." { return "'.' and '..' are not allowed" }
        if name.utf8.count > 249 { return "longer than 249 characters" }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "." || scalar == "_" || scalar == "-")
        }
        return allowed ? nil : "only ASCII letters, digits, '.', '_' and '-' are allowed"
    }
}

/// A Kafka protocol request type (API key), for injecting errors into the embedded cluster.
/// Parse one from text with `init?(name:)`: `produce`, `InitProducerId`, `init-producer-id` and
/// `22` all work.
public enum KafkaAPIKey: Int16, Sendable, CaseIterable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
    case describeGroups = 15
    case listGroups = 16
    case saslHandshake = 17
    case apiVersions = 18
    case createTopics = 19
    case deleteTopics = 20
    case deleteRecords = 21
    case initProducerId = 22
    case offsetForLeaderEpoch = 23
    case addPartitionsToTxn = 24
    case addOffsetsToTxn = 25
    case endTxn = 26
    case writeTxnMarkers = 27
    case txnOffsetCommit = 28
    case describeConfigs = 32
    case alterConfigs = 33
    case saslAuthenticate = 36
    case createPartitions = 37
    case deleteGroups = 42
    case incrementalAlterConfigs = 44
    case offsetDelete = 47

    /// The Swift case name, e.g. `initProducerId`.
    public var name: String { String(describing: self) }

    /// Parses a case name in any letter case, with or without `-`/`_` between words, or the
    /// numeric API key.
    public init?(name: String) {
        if let number = Int16(name) {
            self.init(rawValue: number)
            return
        }
        let wanted = Self.normalized(name)
        guard let match = Self.allCases.first(where: { Self.normalized($0.name) == wanted }) else { return nil }
        self = match
    }

    private static func normalized(_ text: String) -> String {
        String(text.lowercased().filter { $0 != "-" && $0 != "_" })
    }
}

/// A librdkafka error code (`rd_kafka_resp_err_t`) with librdkafka's name and description for it.
/// Names come from the linked librdkafka at run time (`rd_kafka_get_err_descs`): broker errors
/// such as `NOT_LEADER_FOR_PARTITION`, and librdkafka's own (negative codes, names starting with
/// `_`) such as `_TRANSPORT`.
public struct KafkaErrorCode: Sendable, Hashable, CustomStringConvertible {
    /// The numeric code.
    public let code: Int32
    /// librdkafka's name, e.g. `REQUEST_TIMED_OUT`.
    public let name: String
    /// librdkafka's description, e.g. `Broker: Request timed out`.
    public let description: String

    /// Every code the linked librdkafka knows.
    public static var all: [KafkaErrorCode] {
        ErrorCodeTable.entries.map { KafkaErrorCode(code: $0.code, name: $0.name, description: $0.description) }
    }

    /// Looks a code up by librdkafka's name: case-insensitive, with or without the
    /// `RD_KAFKA_RESP_ERR_` prefix. Unknown names throw a `.configuration` error with suggestions.
    public init(named rawName: String) throws {
        var name = rawName.trimmingCharactersInWhitespace().uppercased()
        if name.hasPrefix("RD_KAFKA_RESP_ERR_") { name.removeFirst("RD_KAFKA_RESP_ERR_".count) }
        guard let entry = ErrorCodeTable.entries.first(where: { $0.name == name }) else {
            let fragment = name.trimmingUnderscores()
            let similar = fragment.isEmpty ? [] : ErrorCodeTable.entries.map(\.name).filter { $0.contains(fragment) }.prefix(6)
            let hint = similar.isEmpty ? "" : "; similar: " + similar.joined(separator: ", ")
            throw KafkaError(kind: .configuration, message: "unknown Kafka error name '\(rawName)'\(hint)",
                             context: ["error": rawName])
        }
        self.init(code: entry.code, name: entry.name, description: entry.description)
    }

    /// The code with librdkafka's name and description (codes it does not know get a generic name).
    public init(code: Int32) {
        if let entry = ErrorCodeTable.entries.first(where: { $0.code == code }) {
            self.init(code: entry.code, name: entry.name, description: entry.description)
        } else {
            self.init(code: code, name: ErrorCodeTable.name(of: code), description: "unknown error code \(code)")
        }
    }

    private init(code: Int32, name: String, description: String) {
        self.code = code
        self.name = name
        self.description = description
    }
}

extension String {
    fileprivate func trimmingCharactersInWhitespace() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }

    fileprivate func trimmingUnderscores() -> String {
        String(drop(while: { $0 == "_" }))
    }
}
