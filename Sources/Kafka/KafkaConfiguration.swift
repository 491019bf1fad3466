/// librdkafka properties for one client, passed through unchanged (like kcat's `-X key=value`).
///
/// Nothing is translated or renamed: the keys are librdkafka's own
/// (https://github.com/confluentinc/librdkafka/blob/v2.0.2/CONFIGURATION.md). librdkafka validates
/// them when a client is built (or on ``validate()``); a rejected property becomes a
/// `KafkaError(kind: .configuration)` carrying librdkafka's text and the property name.
///
/// Secrets (`sasl.password`, `ssl.key.password`, anything whose name contains `password` or
/// `secret`, ...) are never printed: ``description`` and errors show them as `[redacted]`.
public struct KafkaConfiguration: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The librdkafka properties, exactly as they will be handed to `rd_kafka_conf_set`.
    public var properties: [String: String]

    /// A configuration from raw librdkafka properties.
    public init(_ properties: [String: String] = [:]) {
        self.properties = properties
    }

    /// A configuration pointing at `bootstrapServers` (`host:port,host:port`), plus other properties.
    public init(bootstrapServers: String, _ properties: [String: String] = [:]) {
        self.properties = properties
        self.properties["bootstrap.servers"] = bootstrapServers
    }

    /// Reads or sets one property.
    public subscript(_ name: String) -> String? {
        get { properties[name] }
        set { properties[name] = newValue }
    }

    /// A copy with `other`'s properties set on top of these.
    public func merging(_ other: [String: String]) -> KafkaConfiguration {
        KafkaConfiguration(properties.merging(other) { _, new in new })
    }

    /// A copy where each property in `defaults` is set only if it is not set already.
    func withDefaults(_ defaults: [String: String]) -> KafkaConfiguration {
        KafkaConfiguration(properties.merging(defaults) { mine, _ in mine })
    }

    /// Parses one kcat-style `key=value` argument. The value may itself contain `=`.
    public static func parseProperty(_ argument: String) throws(KafkaError) -> (name: String, value: String) {
        guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
            throw KafkaError(
                kind: .configuration,
                message: "expected a librdkafka property as key=value",
                context: ["argument": isSecret(argument) ? KafkaConfiguration.redacted : argument])
        }
        let name = String(argument[..<equals]).trimmingSpaces()
        let value = String(argument[argument.index(after: equals)...])
        return (name, value)
    }

    /// The text shown instead of a secret value.
    public static let redacted = "[redacted]"

    /// Property names that hold secrets even though their name does not say `password`/`secret`.
    static let secretNames: Set<String> = [
        "sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret",
        "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config", "sasl.kerberos.keytab",
    ]

    /// Whether a property's value must never be printed.
    public static func isSecret(_ name: String) -> Bool {
        let lower = name.lowercased()
        return secretNames.contains(lower) || lower.contains("password") || lower.contains("secret")
    }

    /// The value of `name` as it may be printed: the value itself, or `[redacted]` for secrets.
    public static func printableValue(name: String, value: String) -> String {
        isSecret(name) ? redacted : value
    }

    /// The properties with secret values replaced by `[redacted]`; safe to log.
    public var redactedProperties: [String: String] {
        var copy = properties
        for key in copy.keys where Self.isSecret(key) { copy[key] = Self.redacted }
        return copy
    }

    /// `key=value` pairs sorted by key, secrets redacted.
    public var description: String {
        redactedProperties.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    public var debugDescription: String { "KafkaConfiguration(\(description))" }

    /// Asks librdkafka to accept every property (`rd_kafka_conf_set`), without creating a client.
    ///
    /// - Throws: `KafkaError(kind: .configuration)` naming the first rejected property, with
    ///   librdkafka's own explanation.
    public func validate() throws(KafkaError) {
        try RDKafkaConf.validate(properties)
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
