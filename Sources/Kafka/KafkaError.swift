/// An error from the Kafka layer: what failed, librdkafka's own code and text where there is one,
/// and the context (topic, partition, property) needed to act on it.
///
/// `kind` says what a caller should do: retry a retriable error, abort and rewind on an abortable
/// transaction error, rebuild the producer on a fatal one (e.g. fenced by a newer instance).
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is, which decides how a caller recovers.
    public enum Kind: String, Sendable, Codable {
        /// A property name or value librdkafka rejected, or an invalid combination.
        case configuration
        /// A transient condition (leader moving, request timed out, broker briefly down): retry.
        case retriable
        /// An error that aborts the current transaction; abort, rewind, and try again.
        case transactionAbortable
        /// The instance can no longer be used (fenced producer, fatal idempotence error): rebuild it.
        case fatal
        /// The operation did not finish within its timeout.
        case timeout
        /// The topic or partition does not exist.
        case unknownTopicOrPartition
        /// The operation is not valid in the object's current state (e.g. closed).
        case state
        /// The mock cluster rejected a request (embedded cluster only).
        case mockCluster
        /// Any other error librdkafka reported.
        case other
    }

    public var kind: Kind
    /// librdkafka's `rd_kafka_resp_err_t` value, when the error came from librdkafka.
    public var code: Int32?
    /// librdkafka's name for the code (e.g. `_TIMED_OUT`, `UNKNOWN_TOPIC_OR_PART`).
    public var codeName: String?
    /// Human-readable text, librdkafka's own where it gave one.
    public var message: String
    /// What the error is about: operation, topic, partition, property, ...
    public var context: [String: String]

    public init(kind: Kind, code: Int32? = nil, codeName: String? = nil, message: String, context: [String: String] = [:]) {
        self.kind = kind
        self.code = code
        self.codeName = codeName
        self.message = message
        self.context = context
    }

    public var isRetriable: Bool { kind == .retriable || kind == .timeout }

    /// Whether the broker (or librdkafka, before sending) refused this one record for what it is:
    /// sending the same bytes again can never succeed (too large, invalid, a timestamp out of
    /// range, a topic this client may not write). Other records to the same topic may still go.
    public var refusesRecord: Bool {
        guard let codeName else { return false }
        return Self.recordRefusals.contains(codeName)
    }

    /// librdkafka's names of the per-record refusals (see ``refusesRecord``).
    static let recordRefusals: Set<String> = [
        "MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD", "INVALID_TIMESTAMP", "TOPIC_AUTHORIZATION_FAILED",
    ]

    public var description: String {
        var text = message
        if let codeName { text += " [\(codeName)]" }
        if !context.isEmpty {
            text += " (" + context.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + ")"
        }
        return text
    }
}
