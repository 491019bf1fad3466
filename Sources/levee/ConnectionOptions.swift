import Foundation
import Synchronization
import Kafka
import Pipeline

/// The options every command that talks to Kafka shares, from flags or `LEVEE_*` variables:
/// `--brokers` (LEVEE_BROKERS), `--prefix` (LEVEE_PREFIX), `--partitions` (LEVEE_PARTITIONS),
/// and librdkafka properties as `-X key=value` or `LEVEE_KAFKA_<KEY>` (dots as underscores:
/// LEVEE_KAFKA_SECURITY_PROTOCOL=SASL_SSL). Flags win over the environment.
struct ConnectionOptions {
    var brokers: String
    var prefix: String
    var partitions: Int
    var replicationFactor: Int
    var properties: [String: String]

    static let help = """
    Connection (flags, or the LEVEE_* environment variables in brackets):
      --brokers LIST        Kafka bootstrap servers, host:port[,host:port…]   [LEVEE_BROKERS]
      --prefix P            topic name prefix (default none)                   [LEVEE_PREFIX]
      --partitions N        partitions of Levee's topics (default 12)          [LEVEE_PARTITIONS]
      -X key=value          a librdkafka property, repeatable (security.protocol, sasl.*, ssl.*…)
                                                                               [LEVEE_KAFKA_<KEY>, dots as _]
    """

    static func parse(_ arguments: inout Arguments, environment: [String: String] = ProcessInfo.processInfo.environment,
                      requireBrokers: Bool = true) throws -> ConnectionOptions {
        let brokers = try arguments.option("--brokers") ?? environment["LEVEE_BROKERS"] ?? ""
        if requireBrokers && brokers.isEmpty {
            throw CommandFailure.usage("no brokers: give --brokers host:port or set LEVEE_BROKERS (for a local cluster: levee broker)")
        }
        let prefix = try arguments.option("--prefix") ?? environment["LEVEE_PREFIX"] ?? ""
        let partitionsText = try arguments.option("--partitions") ?? environment["LEVEE_PARTITIONS"] ?? "12"
        guard let partitions = Int(partitionsText), (1...10_000).contains(partitions) else {
            throw CommandFailure.usage("--partitions expects a whole number from 1 to 10000, got '\(partitionsText)'")
        }
        var properties: [String: String] = [:]
        for (key, value) in environment where key.hasPrefix("LEVEE_KAFKA_") && key.count > 12 {
            properties[key.dropFirst(12).lowercased().replacingOccurrences(of: "_", with: ".")] = value
        }
        properties.merge(try parseProperties(&arguments)) { _, flag in flag }
        if !properties.isEmpty {
            do { try KafkaConfiguration(properties).validate() } catch {
                throw CommandFailure.usage("bad Kafka property: \(error)")
            }
        }
        return ConnectionOptions(brokers: brokers, prefix: prefix, partitions: partitions, replicationFactor: 1, properties: properties)
    }

    /// The `-X key=value` flags (repeatable) as librdkafka properties, with a usage error for a malformed one.
    static func parseProperties(_ arguments: inout Arguments) throws -> [String: String] {
        var properties: [String: String] = [:]
        for item in try arguments.values("-X") {
            do {
                let (name, value) = try KafkaConfiguration.parseProperty(item)
                properties[name] = value
            } catch {
                throw CommandFailure.usage("-X \(item): \(error)")
            }
        }
        return properties
    }

    var connection: KafkaConnection {
        KafkaConnection(bootstrapServers: brokers, properties: properties,
                        layout: TopicLayout(prefix: prefix, partitions: partitions, replicationFactor: replicationFactor))
    }
}

/// Parses a job id argument with a clear error.
func parseJobID(_ text: String?) throws -> JobID {
    guard let text else { throw CommandFailure.usage("which job? give its id (a UUID)") }
    guard let id = JobID(string: text) else { throw CommandFailure.usage("'\(text)' is not a job id (a UUID like 019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07)") }
    return id
}

/// Runs `body` until it returns; SIGINT/SIGTERM call `onSignal` once (graceful stop), a second
/// signal exits at once with 130.
func withTerminationSignals<T>(_ onSignal: @escaping @Sendable () -> Void, _ body: () async throws -> T) async throws -> T {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let queue = DispatchQueue(label: "levee.signals")
    let count = Mutex(0)
    let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler {
            let n = count.withLock { c -> Int in c += 1; return c }
            if n == 1 {
                printError("levee: \(sig == SIGINT ? "SIGINT" : "SIGTERM") received, stopping gracefully (again to stop at once)")
                onSignal()
            } else {
                exit(130)
            }
        }
        source.resume()
        return source
    }
    defer { sources.forEach { $0.cancel() } }
    return try await body()
}
