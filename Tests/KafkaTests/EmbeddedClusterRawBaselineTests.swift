import Kafka
import Testing

/// The raw librdkafka loops behind `levee bench kafka`: they must move exactly what they claim,
/// or the benchmark's baseline means nothing. (No timing is asserted.)
@Suite("RawBaseline on the embedded cluster", .serialized)
struct EmbeddedClusterRawBaselineTests {
    @Test("produce then consume moves every message and byte", .timeLimit(.minutes(3)))
    func roundTrip() throws {
        let cluster = try EmbeddedCluster()
        try cluster.createTopic("levee.raw.round-trip", partitions: 3)
        let produced = try RawBaseline.produce(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.round-trip",
                                               messages: 1500, size: 100, properties: KafkaProducer.defaultProperties)
        #expect(produced.messages == 1500)
        #expect(produced.bytes == 150_000)
        #expect(produced.seconds > 0)
        let consumed = try RawBaseline.consume(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.round-trip",
                                               partitions: 3, messages: 1500, timeoutSeconds: 30)
        #expect(consumed.messages == 1500)
        #expect(consumed.bytes == 150_000)
    }

    @Test("consuming more than the topic holds fails instead of reporting a number", .timeLimit(.minutes(3)))
    func consumeTooMany() throws {
        let cluster = try EmbeddedCluster()
        try cluster.createTopic("levee.raw.short", partitions: 2)
        _ = try RawBaseline.produce(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.short", messages: 10, size: 10)
        let error = try #require(throws: KafkaError.self) {
            try RawBaseline.consume(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.short", partitions: 2,
                                    messages: 11, timeoutSeconds: 3)
        }
        #expect(error.kind == .timeout)
        #expect(error.message.contains("10 of 11"))
    }

    @Test("undelivered messages and bad properties are errors", .timeLimit(.minutes(3)))
    func failures() throws {
        let cluster = try EmbeddedCluster()
        try cluster.createTopic("levee.raw.down", partitions: 1)
        try cluster.setBrokerDown(1)
        let undelivered = try #require(throws: KafkaError.self) {
            try RawBaseline.produce(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.down", messages: 5, size: 10,
                                    properties: ["message.timeout.ms": "1000"])
        }
        #expect(undelivered.message.contains("0 delivered"))
        let bad = try #require(throws: KafkaError.self) {
            try RawBaseline.produce(bootstrapServers: cluster.bootstrapServers, topic: "levee.raw.down", messages: 1, size: 1,
                                    properties: ["no.such.property": "1"])
        }
        #expect(bad.kind == .configuration)
        #expect(bad.context["property"] == "no.such.property")
    }
}
