import Foundation
import Inference
import Kafka

/// What `levee doctor` checks: the Kafka connection and topic layout, the engine the workers will
/// run, and how many jobs a worker runs at once.
public struct DoctorConfiguration: Sendable {
    /// The engine as configured, without loading it (the doctor must work when loading would fail).
    public enum Engine: Sendable, Equatable {
        /// The local GGUF engine: the model's path (it may not exist) and its batch size.
        case local(modelPath: String, maxBatch: Int)
        /// An OpenAI-compatible backend. `apiKey` is sent, never shown; `keySource` names where it
        /// came from (an environment variable) for messages.
        case openAI(baseURL: URL, model: String, apiKey: String?, keySource: String)
        /// The synthetic engine (benchmarks and chaos tests): nothing to check.
        case synthetic
    }

    public var connection: KafkaConnection
    public var engine: Engine
    /// Jobs one worker runs at once (`--concurrency`).
    public var concurrency: Int
    /// The model file's expected SHA-256 (hex). Nil: the default model's digest when the file has
    /// the default model's name, else no checksum check.
    public var expectedModelSHA256: String?
    /// Bound of each network step (metadata, DescribeConfigs, InitProducerId, HTTP).
    public var timeout: Duration
    /// The workers' `transaction.timeout.ms`, so a broker limit below it is found here.
    public var transactionTimeout: Duration
    /// False for `--delivery at-least-once` workers, which use no transactions.
    public var checkTransactions: Bool

    public init(connection: KafkaConnection, engine: Engine, concurrency: Int = 4, expectedModelSHA256: String? = nil,
                timeout: Duration = .seconds(10), transactionTimeout: Duration = WorkerConfiguration(workerID: "doctor").transactionTimeout,
                checkTransactions: Bool = true) {
        self.connection = connection
        self.engine = engine
        self.concurrency = concurrency
        self.expectedModelSHA256 = expectedModelSHA256
        self.timeout = timeout
        self.transactionTimeout = transactionTimeout
        self.checkTransactions = checkTransactions
    }
}

/// Pre-flight checks, each with the fix for its failure: librdkafka, brokers, topics and their
/// configs, replication, transactions, the model file and its checksum, memory for the configured
/// concurrency, and the OpenAI-compatible backend. Checks that do not apply are skipped with the
/// reason. Nothing here changes the cluster except one throwaway `transactional.id` registration.
public enum Doctor {
    /// SHA-256 of the default model, SmolLM2-135M-Instruct.Q4_1.gguf (the value `scripts/setup` checks).
    public static let defaultModelSHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    /// Runs every check. Never throws: a failure to check is itself a failed check.
    public static func run(_ configuration: DoctorConfiguration) async -> DoctorReport {
        var checks = [libraryCheck(configuration.connection)]
        checks += await KafkaChecks(configuration: configuration).run()
        checks += await HostChecks(configuration: configuration).run()
        return DoctorReport(checks: checks)
    }

    /// librdkafka: loaded version, and the features the configured security settings need.
    static func libraryCheck(_ connection: KafkaConnection) -> DoctorCheck {
        let number = KafkaLibrary.versionNumber
        let (major, minor, _) = KafkaLibrary.components(of: number)
        let features = Set(KafkaLibrary.builtinFeatures)
        var detail = "librdkafka \(KafkaLibrary.version) loaded"
        if number != KafkaLibrary.headerVersionNumber {
            let (hm, hn, hr) = KafkaLibrary.components(of: KafkaLibrary.headerVersionNumber)
            detail += " (built against \(hm).\(hn).\(hr))"
        }
        // Transactions with consumer-group metadata (KIP-447) need librdkafka 1.6.
        if major < 1 || (major == 1 && minor < 6) {
            return DoctorCheck("librdkafka", .fail, detail + "; Levee's workers need 1.6 or later (transactions with group metadata, KIP-447)",
                               fix: "install librdkafka 1.6+ (Debian 12: apt-get install librdkafka1 librdkafka-dev)")
        }
        let wanted = (connection.properties["security.protocol"] ?? "plaintext").lowercased()
        var missing: [String] = []
        if wanted.contains("ssl") && !features.contains("ssl") { missing.append("ssl") }
        if wanted.contains("sasl") && !features.contains("sasl") { missing.append("sasl") }
        if let mechanism = connection.properties["sasl.mechanisms"] ?? connection.properties["sasl.mechanism"] {
            let m = mechanism.uppercased()
            if m.hasPrefix("SCRAM") && !features.contains("sasl_scram") { missing.append("sasl_scram") }
            if m == "GSSAPI" && !features.contains("sasl_gssapi") { missing.append("sasl_gssapi") }
            if m == "OAUTHBEARER" && !features.contains("sasl_oauthbearer") { missing.append("sasl_oauthbearer") }
        }
        if !missing.isEmpty {
            return DoctorCheck("librdkafka", .fail, detail + "; built without \(missing.joined(separator: ", ")), which security.protocol=\(wanted) needs",
                               fix: "install a librdkafka built with \(missing.joined(separator: ", ")) (Debian's librdkafka1 has them)")
        }
        return DoctorCheck("librdkafka", .ok, detail)
    }
}
