import Foundation
import Kafka
import Pipeline

/// `levee topics create`: provisions Levee's topics, idempotently.
enum TopicsCommand: LeveeCommand {
    static let name = "topics"
    static let summary = "Create Levee's topics (idempotent) or list them"
    static let help = """
    Usage: levee topics create [--replication-factor N] [connection options] [--json]
           levee topics list [connection options] [--json]

    create: creates the job, retry, results (compacted), dead-letter, trace, workers (compacted)
    and control (compacted) topics under the prefix. Topics that exist are left as they are;
    a partition count that differs from --partitions is reported as a warning.
    list: the topics under the prefix with their partition counts.

      --replication-factor N   replicas per partition (default 1; 3 on a production cluster)
      --json                   one JSON object

    \(ConnectionOptions.help)

    An embedded `levee broker` cannot create topics through the Admin API (librdkafka's mock
    cluster has no CreateTopics): start it with `levee broker --levee-topics PREFIX` instead.
    """

    static func run(_ arguments: inout Arguments) async throws {
        guard let action = arguments.positional() else { throw CommandFailure.usage("topics what? create or list") }
        let json = arguments.flag("--json")
        let replication = try arguments.option("--replication-factor", as: Int.self) ?? 1
        guard (1...16).contains(replication) else { throw CommandFailure.usage("--replication-factor expects 1...16") }
        var options = try ConnectionOptions.parse(&arguments)
        options.replicationFactor = replication
        try arguments.finish()
        let connection = options.connection
        switch action {
        case "create":
            let outcomes: [TopicProvisioner.Outcome]
            do {
                outcomes = try await TopicProvisioner.ensureTopics(connection, timeout: .seconds(20))
            } catch let error as KafkaError where error.kind == .timeout {
                throw CommandFailure.failed("creating topics timed out (\(error)). Are the brokers at \(options.brokers) up? An embedded levee broker cannot create topics: use levee broker --levee-topics")
            }
            if json {
                try printJSON(["topics": outcomes])
            } else {
                for o in outcomes {
                    printOut("\(o.created ? "created" : "exists ") \(o.topic) (\(o.partitions) partitions)\(o.warning.map { " — warning: \($0)" } ?? "")\n")
                }
            }
        case "list":
            let admin = try KafkaAdmin(configuration: connection.configuration())
            let metadata = try await admin.metadata()
            let ours = Set(connection.layout.specs.map(\.name))
            let rows = metadata.topics.filter { ours.contains($0.name) }.sorted { $0.name < $1.name }
            if json {
                try printJSON(["topics": rows.map { ["name": $0.name, "partitions": String($0.partitionCount)] }])
            } else {
                for spec in connection.layout.specs {
                    let found = rows.first { $0.name == spec.name }
                    printOut("\(spec.name): \(found.map { "\($0.partitionCount) partitions" } ?? "missing")\n")
                }
            }
        default:
            throw CommandFailure.usage("unknown action '\(action)'; use create or list")
        }
    }
}
