import Foundation
import Kafka
import Testing

/// The embedded (librdkafka mock) cluster, checked from outside with kcat: an independent client
/// in another process, so these tests see what any client would see.
@Suite("EmbeddedCluster", .serialized)
struct EmbeddedClusterTests {
    @Test("starts with the requested number of brokers", arguments: [1, 3])
    func startsWithBrokers(count: Int) throws {
        let cluster = try EmbeddedCluster(brokers: count)
        #expect(cluster.brokerIDs == (1...count).map { Int32($0) })
        #expect(cluster.bootstrapServers.split(separator: ",").count == count)
        let metadata = try Kcat.metadata(cluster.bootstrapServers)
        #expect(metadata.brokers.map(\.id).sorted() == cluster.brokerIDs)
    }

    @Test("a created topic shows its partitions in a client's metadata")
    func topicVisible() throws {
        let cluster = try EmbeddedCluster(brokers: 3)
        try cluster.createTopic("levee.test.seven", partitions: 7, replicationFactor: 2)
        let metadata = try Kcat.metadata(cluster.bootstrapServers, topic: "levee.test.seven")
        let topic = try #require(metadata.topics.first { $0.topic == "levee.test.seven" })
        #expect(topic.partitions.count == 7)
        // The mock places replicas by its own default, so only leadership is checked here.
        #expect(topic.partitions.allSatisfy { cluster.brokerIDs.contains($0.leader) })
    }

    @Test("invalid topics are refused with a configuration error")
    func invalidTopics() throws {
        let cluster = try EmbeddedCluster()
        for (name, partitions, replication) in [("ok", 0, 1), ("bad name!", 1, 1), ("", 1, 1), ("ok", 1, 2)] {
            let error = try #require(throws: KafkaError.self) {
                try cluster.createTopic(name, partitions: partitions, replicationFactor: replication)
            }
            #expect(error.kind == .configuration)
            #expect(error.context["topic"] == name)
        }
        #expect(throws: KafkaError.self) { try EmbeddedCluster(brokers: 0) }
    }

    @Test("error codes are looked up by librdkafka's names")
    func errorNames() throws {
        #expect(try KafkaErrorCode(named: "NOT_LEADER_FOR_PARTITION").code == 6)
        #expect(try KafkaErrorCode(named: "request_timed_out").code == 7)
        #expect(try KafkaErrorCode(named: "RD_KAFKA_RESP_ERR__TRANSPORT").name == "_TRANSPORT")
        #expect(try KafkaErrorCode(named: "_TRANSPORT").code < 0)
        #expect(KafkaErrorCode(code: 7).name == "REQUEST_TIMED_OUT")
        #expect(KafkaErrorCode.all.contains { $0.name == "INVALID_PRODUCER_EPOCH" })
        let error = try #require(throws: KafkaError.self) { try KafkaErrorCode(named: "NOT_A_LEADER") }
        #expect(error.kind == .configuration)
        #expect(error.message.contains("NOT_A_LEADER"))
    }

    @Test("API keys parse from names in several spellings and from numbers")
    func apiKeys() {
        #expect(KafkaAPIKey(name: "produce") == .produce)
        #expect(KafkaAPIKey(name: "InitProducerId") == .initProducerId)
        #expect(KafkaAPIKey(name: "init-producer-id") == .initProducerId)
        #expect(KafkaAPIKey(name: "txn_offset_commit") == .txnOffsetCommit)
        #expect(KafkaAPIKey(name: "1") == .fetch)
        #expect(KafkaAPIKey(name: "produced") == nil)
        #expect(KafkaAPIKey(name: "9999") == nil)
    }

    @Test("cluster-wide request errors fail the next requests, then clients succeed again")
    func clusterRequestErrors() throws {
        let cluster = try EmbeddedCluster()
        try cluster.createTopic("levee.test.errors", partitions: 1)
        // Not retriable, so the delivery fails rather than being retried past the pushed error.
        try cluster.pushRequestErrors(api: .produce, errorNames: ["TOPIC_AUTHORIZATION_FAILED"])
        let failed = try Kcat.produce(cluster.bootstrapServers, topic: "levee.test.errors", lines: ["one"])
        #expect(failed.status != 0)
        #expect(failed.stderr.contains("Topic authorization failed"))
        let delivered = try Kcat.produce(cluster.bootstrapServers, topic: "levee.test.errors", lines: ["two"])
        #expect(delivered.status == 0)
        let consumed = try Kcat.consume(cluster.bootstrapServers, topic: "levee.test.errors", count: 1)
        #expect(consumed == ["two"])
    }

    @Test("per-broker request errors are queued on that broker; unknown brokers are refused")
    func brokerRequestErrors() throws {
        let cluster = try EmbeddedCluster(brokers: 3)
        #expect(try cluster.pendingRequestErrors(broker: 2, api: .produce) == 0)
        try cluster.pushRequestErrors(broker: 2, api: .produce,
                                      errors: [try KafkaErrorCode(named: "NOT_LEADER_FOR_PARTITION"),
                                               try KafkaErrorCode(named: "REQUEST_TIMED_OUT")],
                                      roundTripMilliseconds: 5)
        #expect(try cluster.pendingRequestErrors(broker: 2, api: .produce) == 2)
        #expect(try cluster.pendingRequestErrors(broker: 1, api: .produce) == 0)
        #expect(try cluster.pendingRequestErrors(broker: 2, api: .fetch) == 0)
        // The pushed code itself reaches the client.
        try cluster.createTopic("levee.test.broker-errors", partitions: 1)
        try cluster.setPartitionLeader(topic: "levee.test.broker-errors", partition: 0, broker: 3)
        try cluster.pushRequestErrors(broker: 3, api: .produce, errors: [try KafkaErrorCode(named: "TOPIC_AUTHORIZATION_FAILED")])
        let failed = try Kcat.produce(cluster.bootstrapServers, topic: "levee.test.broker-errors", lines: ["one"])
        #expect(failed.stderr.contains("Topic authorization failed"))
        #expect(try cluster.pendingRequestErrors(broker: 3, api: .produce) == 0)
        let error = try #require(throws: KafkaError.self) {
            try cluster.pushRequestErrors(broker: 9, api: .produce, errors: [try KafkaErrorCode(named: "REQUEST_TIMED_OUT")])
        }
        #expect(error.kind == .mockCluster)
        #expect(error.context["broker"] == "9")
    }

    @Test("a broker set down is unreachable until set up again")
    func brokerDownUp() throws {
        let cluster = try EmbeddedCluster()
        try cluster.setBrokerDown(1)
        #expect(throws: (any Error).self) { try Kcat.metadata(cluster.bootstrapServers, timeoutSeconds: 2) }
        try cluster.setBrokerUp(1)
        #expect(try Kcat.metadata(cluster.bootstrapServers).brokers.count == 1)
    }

    @Test("fault calls on a broker that does not exist throw")
    func unknownBroker() throws {
        let cluster = try EmbeddedCluster(brokers: 2)
        for call in [{ try cluster.setBrokerDown(3) }, { try cluster.setBrokerUp(0) },
                     { try cluster.setRoundTripTime(broker: -1, milliseconds: 10) }] {
            let error = try #require(throws: KafkaError.self) { try call() }
            #expect(error.kind == .mockCluster)
        }
        try cluster.setRoundTripTime(broker: 2, milliseconds: 10)
        #expect(throws: KafkaError.self) { try cluster.setRoundTripTime(broker: 2, milliseconds: -5) }
    }
}

/// Runs kcat (installed by scripts/setup) against a cluster.
enum Kcat {
    struct Metadata: Decodable {
        struct Broker: Decodable { var id: Int32 }
        struct Topic: Decodable {
            struct Partition: Decodable {
                struct Replica: Decodable { var id: Int32 }
                var partition: Int32
                var leader: Int32
                var replicas: [Replica]
            }
            var topic: String
            var partitions: [Partition]
        }
        var brokers: [Broker]
        var topics: [Topic]
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func metadata(_ bootstrap: String, topic: String? = nil, timeoutSeconds: Int = 10) throws -> Metadata {
        var arguments = ["-L", "-J", "-b", bootstrap, "-m", String(timeoutSeconds)]
        if let topic { arguments += ["-t", topic] }
        let result = try run(arguments)
        guard result.status == 0 else { throw Failure(description: "kcat -L failed: \(result.stderr)") }
        return try JSONDecoder().decode(Metadata.self, from: Data(result.stdout.utf8))
    }

    static func produce(_ bootstrap: String, topic: String, lines: [String]) throws -> Result {
        try run(["-P", "-b", bootstrap, "-t", topic, "-X", "message.timeout.ms=5000"], input: lines.joined(separator: "\n") + "\n")
    }

    static func consume(_ bootstrap: String, topic: String, count: Int) throws -> [String] {
        let result = try run(["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-c", String(count), "-e", "-q"])
        guard result.status == 0 else { throw Failure(description: "kcat -C failed: \(result.stderr)") }
        return result.stdout.split(separator: "\n").map(String.init)
    }

    static func run(_ arguments: [String], input: String = "") throws -> Result {
        guard let path = ["/usr/bin/kcat", "/usr/local/bin/kcat"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw Failure(description: "kcat is not installed (scripts/setup installs it)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                      stderr: String(decoding: err, as: UTF8.self))
    }
}
