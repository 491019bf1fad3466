import Foundation
@testable import Kafka
import Testing

@Suite("Configuration, errors and secrets (pure)")
struct ConfigurationTests {
    @Test("an unknown property is rejected with librdkafka's text and the property name")
    func unknownProperty() throws {
        let error = try #require(throws: KafkaError.self) {
            try KafkaConfiguration(["bootstrap.servers": "localhost:9092", "no.such.property": "1"]).validate()
        }
        #expect(error.kind == .configuration)
        #expect(error.context["property"] == "no.such.property")
        #expect(error.message.contains("No such configuration property"))
        #expect(error.message.contains("no.such.property"))
    }

    @Test("a bad value is rejected with librdkafka's text", arguments: [
        ("acks", "banana"), ("message.timeout.ms", "-5"), ("enable.idempotence", "maybe"), ("isolation.level", "dirty"),
    ])
    func badValue(name: String, value: String) throws {
        let error = try #require(throws: KafkaError.self) {
            _ = try KafkaProducer(configuration: KafkaConfiguration([name: value]))
        }
        #expect(error.kind == .configuration)
        #expect(error.context["property"] == name)
        #expect(error.context["value"] == value)
        #expect(error.message.contains("Invalid value") || error.message.contains("out of range") || error.message.contains(name))
    }

    @Test("an invalid combination is reported by rd_kafka_new as a configuration error")
    func invalidCombination() throws {
        let error = try #require(throws: KafkaError.self) {
            _ = try KafkaProducer(configuration: KafkaConfiguration(["transactional.id": "x", "enable.idempotence": "false"]))
        }
        #expect(error.kind == .configuration)
        #expect(error.message.contains("idempotence"))
    }

    @Test("valid properties pass through unchanged, with the producer's defaults added")
    func defaults() throws {
        let producer = try KafkaProducer(configuration: KafkaConfiguration(["acks": "-1", "linger.ms": "7"]))
        #expect(producer.configuration["acks"] == "-1")  // the caller's value wins
        #expect(producer.configuration["linger.ms"] == "7")
        #expect(producer.configuration["enable.idempotence"] == "true")
        #expect(producer.configuration["partitioner"] == "murmur2_random")
        let consumer = try KafkaConsumer(configuration: KafkaConfiguration(["group.id": "g"]))
        #expect(consumer.configuration["isolation.level"] == "read_committed")
        #expect(consumer.configuration["enable.auto.commit"] == "false")
        #expect(consumer.groupID == "g")
    }

    @Test("secrets never appear in descriptions or errors", arguments: [
        "sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "my.custom.secret",
        "DB_PASSWORD",
    ])
    func secretsRedacted(name: String) throws {
        let secret = "hunter2-\(UUID().uuidString)"
        let configuration = KafkaConfiguration(["bootstrap.servers": "a:1", name: secret])
        #expect(KafkaConfiguration.isSecret(name))
        #expect(!configuration.description.contains(secret))
        #expect(!configuration.debugDescription.contains(secret))
        #expect(configuration.description.contains("\(name)=[redacted]"))
        #expect(configuration.description.contains("bootstrap.servers=a:1"))
        #expect(configuration.redactedProperties[name] == "[redacted]")
        #expect(configuration.properties[name] == secret)  // passed through unchanged to librdkafka
        // A rejected secret property: the error names the property but never shows the value.
        do {
            try configuration.validate()
            #expect(name.hasPrefix("ssl.") || name.hasPrefix("sasl."), "only librdkafka's own secret properties are accepted")
        } catch {
            #expect(!error.description.contains(secret))
            #expect(!error.message.contains(secret))
            #expect(error.context["property"] == name)
            #expect(error.context["value"] == "[redacted]")
        }
        #expect(!KafkaConfiguration.isSecret("bootstrap.servers"))
    }

    @Test("kcat-style key=value arguments are parsed; malformed ones are configuration errors")
    func parseProperty() throws {
        let parsed = try KafkaConfiguration.parseProperty("sasl.jaas.config=a=b")
        #expect(parsed.name == "sasl.jaas.config")
        #expect(parsed.value == "a=b")
        for bad in ["novalue", "=x", ""] {
            let error = try #require(throws: KafkaError.self) { try KafkaConfiguration.parseProperty(bad) }
            #expect(error.kind == .configuration)
        }
    }

    @Test("librdkafka codes map to recovery kinds", arguments: [
        (Int32(-185), KafkaError.Kind.timeout),  // _TIMED_OUT
        (-192, .timeout),  // _MSG_TIMED_OUT
        (3, .unknownTopicOrPartition),  // UNKNOWN_TOPIC_OR_PART
        (-188, .unknownTopicOrPartition),  // _UNKNOWN_TOPIC
        (90, .fatal),  // PRODUCER_FENCED
        (47, .fatal),  // INVALID_PRODUCER_EPOCH
        (-144, .fatal),  // _FENCED
        (-195, .retriable),  // _TRANSPORT
        (6, .retriable),  // NOT_LEADER_FOR_PARTITION
        (51, .retriable),  // CONCURRENT_TRANSACTIONS
        (-172, .state),  // _STATE
        (-186, .configuration),  // _INVALID_ARG
        (10, .other),  // MESSAGE_TOO_LARGE
    ])
    func codeMapping(code: Int32, kind: KafkaError.Kind) {
        let error = KafkaError.fromLibrdkafka(code: code, context: ["topic": "t"])
        #expect(error.kind == kind)
        #expect(error.code == code)
        #expect(error.codeName?.isEmpty == false)
        #expect(!error.message.isEmpty)
        #expect(error.description.contains("topic=t"))
    }

    @Test("error-object flags decide the kind: fatal over abortable over retriable")
    func flagMapping() {
        #expect(KafkaError.classify(code: 10, isFatal: true, requiresAbort: true, isRetriable: true) == .fatal)
        #expect(KafkaError.classify(code: 10, isFatal: false, requiresAbort: true, isRetriable: true) == .transactionAbortable)
        #expect(KafkaError.classify(code: 10, isFatal: false, requiresAbort: false, isRetriable: true) == .retriable)
        #expect(KafkaError.classify(code: -185, isFatal: false, requiresAbort: false, isRetriable: false) == .timeout)
        #expect(KafkaError.classify(code: 10, isFatal: false, requiresAbort: false, isRetriable: false) == .other)
    }

    @Test("serialized group metadata yields generation and member id")
    func groupMetadataLayout() {
        // Layout produced by rd_kafka_consumer_group_metadata_write in librdkafka 2.0.2.
        var bytes = Array("CGMDv2:".utf8) + [7, 0, 0, 0] + Array("grp".utf8) + [0] + Array("member-1".utf8) + [0] + [1]
        let parsed = SerializedGroupMetadata.parse(bytes)
        #expect(parsed?.generation == 7)
        #expect(parsed?.member == "member-1")
        bytes[0] = UInt8(ascii: "X")
        #expect(SerializedGroupMetadata.parse(bytes) == nil)
        #expect(SerializedGroupMetadata.parse(Array("CGMDv2:".utf8)) == nil)
    }

    @Test("the in-flight window makes the caller wait when full and hands slots over in order")
    func inFlightWindow() async throws {
        let window = InFlightWindow(limit: 2)
        try await window.acquire()
        try await window.acquire()
        #expect(window.inUse == 2)
        let third = Task { try await window.acquire(); return true }
        try await Task.sleep(for: .milliseconds(50))
        #expect(window.inUse == 2)  // still waiting
        window.release()
        #expect(try await third.value)
        #expect(window.inUse == 2)
        let cancelled = Task { try await window.acquire() }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        window.close(KafkaError(kind: .state, message: "closed"))
        await #expect(throws: KafkaError.self) { try await window.acquire() }
    }

    @Test("the consumer buffer's legacy policy (LEVEE_CONSUMER_FLOW=legacy): pause and drop when full, resume when half drained")
    func bufferBackpressure() async throws {
        let buffer = ConsumerEventBuffer(capacity: 4, policy: .init(capacity: 4, legacy: true), onDrained: {})
        for i in 0..<4 {
            buffer.push(.message(KafkaMessage(topic: "t", partition: 0, offset: Int64(i), key: nil, value: nil)))
        }
        buffer.push(.partitionsAssigned([TopicPartition("t", 0)]))  // group events do not count
        #expect(buffer.backpressureAction() == .pauseAndDrop)
        #expect(buffer.backpressureAction() == .none)
        _ = try await buffer.next()
        #expect(buffer.backpressureAction() == .none)  // 3 left, above half
        _ = try await buffer.next()
        #expect(buffer.backpressureAction() == .resume)  // 2 left
        buffer.discardMessages(of: [TopicPartition("t", 0)])
        if case .partitionsAssigned = try await buffer.next() {} else { Issue.record("the group event was lost") }
        #expect(buffer.statistics.maxBufferedMessages == 4)
        #expect(buffer.statistics.backpressurePauses == 1)
        for i in 0..<150 { buffer.push(.error(KafkaError(kind: .retriable, message: "broker down \(i)"))) }
        #expect(buffer.statistics.droppedErrors == 50)
        var errors = 0
        while case .error = try await buffer.next() { errors += 1; if errors == 100 { break } }
        #expect(errors == 100)
        buffer.finish()
        #expect(try await buffer.next() == nil)
    }
}
