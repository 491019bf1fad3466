import Foundation
import Kafka
import Testing

/// Bad input gives clear, typed errors within bounded time, never a hang.
@Suite("Kafka bad input")
struct BadInputTests {
    static let unreachable = "127.0.0.1:1"

    @Test("malformed and unknown properties are configuration errors for every client type")
    func badProperties() throws {
        let bad: [[String: String]] = [["no.such.thing": "1"], ["queue.buffering.max.ms": "soon"], ["bootstrap.servers": "x", "socket.timeout.ms": "-1"]]
        for properties in bad {
            let configuration = KafkaConfiguration(properties)
            let errors: [KafkaError] = [
                try #require(throws: KafkaError.self) { _ = try KafkaProducer(configuration: configuration) },
                try #require(throws: KafkaError.self) { _ = try KafkaConsumer(configuration: configuration) },
                try #require(throws: KafkaError.self) { _ = try KafkaAdmin(configuration: configuration) },
            ]
            for error in errors {
                #expect(error.kind == .configuration)
                #expect(error.context["property"].map { properties[$0] != nil } == true, "names the property: \(error)")
            }
        }
        #expect(throws: KafkaError.self) { _ = try TransactionalProducer(configuration: KafkaConfiguration(["bootstrap.servers": "x"])) }
        #expect(throws: KafkaError.self) { _ = try KafkaProducer(configuration: KafkaConfiguration(), maxInFlight: 0) }
        #expect(throws: KafkaError.self) { _ = try KafkaConsumer(configuration: KafkaConfiguration(), bufferCapacity: 0) }
    }

    @Test("an unreachable broker gives timeouts, not hangs", .timeLimit(.minutes(3)))
    func unreachableBroker() async throws {
        let configuration = KafkaConfiguration(bootstrapServers: Self.unreachable, ["message.timeout.ms": "2000", "socket.connection.setup.timeout.ms": "1000"])
        let admin = try KafkaAdmin(configuration: configuration)
        let metadataError = try await #require(throws: KafkaError.self) { try await admin.metadata(timeout: .seconds(2)) }
        #expect(metadataError.kind == .timeout || metadataError.kind == .retriable, "\(metadataError)")

        let producer = try KafkaProducer(configuration: configuration)
        let sendError = try await #require(throws: KafkaError.self) {
            try await producer.send(ProducerRecord(topic: "anything", key: nil, value: "x"))
        }
        #expect(sendError.kind == .timeout, "\(sendError)")
        #expect(sendError.context["topic"] == "anything")
        try await producer.sendAndForget(ProducerRecord(topic: "anything", key: nil, value: "y"))
        let flushError = try await #require(throws: KafkaError.self) { try await producer.flush(timeout: .seconds(5)) }
        #expect(flushError.kind == .timeout)

        let consumer = try KafkaConsumer(configuration: configuration.merging(["group.id": uniqueName("g")]))
        let committedError = try await #require(throws: KafkaError.self) {
            try await consumer.committed([TopicPartition("anything", 0)], timeout: .seconds(2))
        }
        #expect(committedError.kind == .timeout || committedError.kind == .retriable, "\(committedError)")
        let watermarkError = try await #require(throws: KafkaError.self) {
            try await consumer.watermarks(TopicPartition("anything", 0), timeout: .seconds(2))
        }
        #expect(watermarkError.kind == .timeout || watermarkError.kind == .retriable, "\(watermarkError)")
        let windowError = try await #require(throws: KafkaError.self) {
            try await KafkaConsumer.readWindow(configuration: configuration, partition: TopicPartition("anything", 0), from: 0, maxMessages: 1, timeout: .seconds(2))
        }
        #expect(windowError.kind == .timeout)
        await consumer.close()
    }

    @Test("a topic that does not exist is reported as such", .timeLimit(.minutes(3)))
    func missingTopic() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let configuration = KafkaConfiguration(bootstrapServers: cluster.bootstrapServers)
        let admin = try KafkaAdmin(configuration: configuration)
        let name = uniqueName("absent")
        let error = try await #require(throws: KafkaError.self) { try await admin.describeTopic(name) }
        #expect(error.kind == .unknownTopicOrPartition)
        #expect(error.context["topic"] == name)
        // A producer bounded by message.timeout.ms gets a typed error for a partition that does not exist.
        try cluster.createTopic(name, partitions: 1)
        let producer = try KafkaProducer(configuration: configuration.merging(["message.timeout.ms": "2000"]))
        let sendError = try await #require(throws: KafkaError.self) {
            try await producer.send(ProducerRecord(topic: name, partition: 7, key: nil, value: "x"))
        }
        #expect(sendError.kind == .unknownTopicOrPartition || sendError.kind == .timeout, "\(sendError)")
        try await producer.close()
    }

    @Test("using a closed producer or consumer is a state error, not a crash", .timeLimit(.minutes(3)))
    func closedClients() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let configuration = KafkaConfiguration(bootstrapServers: cluster.bootstrapServers)
        let producer = try KafkaProducer(configuration: configuration)
        try await producer.close()
        let error = try await #require(throws: KafkaError.self) {
            try await producer.send(ProducerRecord(topic: "t", key: nil, value: "x"))
        }
        #expect(error.kind == .state)
        let consumer = try KafkaConsumer(configuration: configuration)
        await consumer.close()
        var iterator = consumer.messages.makeAsyncIterator()
        #expect(try await iterator.next() == nil)
        await #expect(throws: KafkaError.self) { try await consumer.seek([TopicPartitionOffset("t", 0, offset: 0)]) }
    }
}
