import Testing
@testable import Kafka

/// The consumer buffer's flow control (pure): pause at the capacity without dropping what
/// librdkafka already fetched, drop only past the hard limit, resume at the low-water mark.
@Suite struct ConsumerFlowControlTests {
    static func message(_ i: Int) -> KafkaConsumerEvent {
        .message(KafkaMessage(topic: "t", partition: 0, offset: Int64(i), key: nil, value: nil))
    }

    @Test func pauseKeepsPrefetchedRecordsAndResumesAtTheLowWaterMark() async throws {
        let policy = ConsumerEventBuffer.FlowPolicy(capacity: 8, legacy: false)
        #expect(policy.hardLimit == 8 + 1024 && policy.lowWater == 6 && !policy.dropOnPause)
        let buffer = ConsumerEventBuffer(capacity: 8, policy: policy, onDrained: {})
        for i in 0..<7 { buffer.push(Self.message(i)) }
        #expect(buffer.backpressureAction() == .none)
        buffer.push(Self.message(7))
        #expect(buffer.backpressureAction() == .pause, "full: stop fetching, without a seek")
        // Records librdkafka had fetched keep arriving above the capacity.
        for i in 8..<20 { buffer.push(Self.message(i)) }
        #expect(buffer.backpressureAction() == .none)
        for _ in 0..<13 { _ = try await buffer.next() }
        #expect(buffer.backpressureAction() == .none, "7 left: above the low-water mark")
        _ = try await buffer.next()
        #expect(buffer.backpressureAction() == .resume, "6 left: resume while the reader still has records")
        let statistics = buffer.statistics
        #expect(statistics.maxBufferedMessages == 20 && statistics.backpressurePauses == 1 && statistics.overflowSeeks == 0)
        #expect(statistics.hardLimit == policy.hardLimit)
    }

    @Test func pastTheHardLimitPrefetchedRecordsAreDropped() async throws {
        let policy = ConsumerEventBuffer.FlowPolicy(capacity: 4, legacy: false)
        let buffer = ConsumerEventBuffer(capacity: 4, policy: policy, onDrained: {})
        for i in 0..<4 { buffer.push(Self.message(i)) }
        #expect(buffer.backpressureAction() == .pause)
        for i in 4..<policy.hardLimit { buffer.push(Self.message(i)) }
        #expect(buffer.backpressureAction() == .pauseAndDrop, "the room above the capacity is full: seek back")
        #expect(buffer.backpressureAction() == .none, "once per pause")
        #expect(buffer.statistics.overflowSeeks == 1)
        // Reaching the hard limit in one step (a reader far behind) drops at once.
        let fresh = ConsumerEventBuffer(capacity: 4, policy: policy, onDrained: {})
        for i in 0..<policy.hardLimit { fresh.push(Self.message(i)) }
        #expect(fresh.backpressureAction() == .pauseAndDrop)
    }

    @Test func theLegacyPolicyPausesAndDropsAtTheCapacity() {
        let legacy = ConsumerEventBuffer.FlowPolicy(capacity: 10, legacy: true)
        #expect(legacy.hardLimit == 10 && legacy.lowWater == 5 && legacy.dropOnPause)
    }

    @Test func theConsumerBoundsLibrdkafkasPrefetchToTheBuffer() throws {
        let consumer = try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: "127.0.0.1:1"), bufferCapacity: 64)
        #expect(consumer.configuration["queued.min.messages"] == String(64 + 1024))
        let explicit = try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: "127.0.0.1:1", ["queued.min.messages": "5"]),
                                         bufferCapacity: 64)
        #expect(explicit.configuration["queued.min.messages"] == "5", "a caller's setting wins")
    }
}
