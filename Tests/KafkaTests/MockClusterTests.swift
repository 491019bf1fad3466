import Foundation
import Kafka
import Synchronization
import Testing

/// The Kafka API against the embedded (librdkafka mock) cluster: produce/consume, groups,
/// offsets, back-pressure and broker faults. Transactions are not checked here (the mock does
/// not enforce them; see NoidaTransactionTests).
@Suite("Kafka on the embedded cluster")
struct MockClusterTests {
    func producer(_ cluster: EmbeddedCluster, _ extra: [String: String] = [:], maxInFlight: Int = 10_000) throws -> KafkaProducer {
        try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers, extra), maxInFlight: maxInFlight)
    }

    func consumer(_ cluster: EmbeddedCluster, group: String?, _ extra: [String: String] = [:], bufferCapacity: Int = 1000) throws -> KafkaConsumer {
        var properties = fastGroup.merging(extra) { $1 }
        if let group { properties["group.id"] = group }
        return try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers, properties), bufferCapacity: bufferCapacity)
    }

    @Test("records round-trip over several partitions with keys, headers and per-key partitions", .timeLimit(.minutes(3)))
    func roundTrip() async throws {
        let cluster = try EmbeddedCluster(brokers: 3)
        let topic = uniqueName("roundtrip")
        try cluster.createTopic(topic, partitions: 4)
        let producer = try producer(cluster)
        var reports: [String: DeliveryReport] = [:]
        for i in 0..<200 {
            let key = "key-\(i % 20)"
            let report = try await producer.send(
                ProducerRecord(topic: topic, key: key, value: "value-\(i)", headers: [KafkaHeader("n", "\(i)"), KafkaHeader("empty", nil)]))
            if let earlier = reports[key] { #expect(earlier.partition == report.partition, "a key always goes to one partition") }
            reports[key] = report
            #expect(report.topic == topic)
            #expect(report.offset >= 0)
        }
        #expect(Set(reports.values.map(\.partition)).count > 1, "20 keys spread over several partitions")

        let consumer = try consumer(cluster, group: uniqueName("g"))
        try consumer.subscribe([topic])
        let messages = try await collect(consumer, count: 200)
        #expect(Set(messages.compactMap(\.valueString)) == Set((0..<200).map { "value-\($0)" }))
        for message in messages {
            let n = try #require(message.header("n")?.stringValue.flatMap { Int($0) })
            #expect(message.valueString == "value-\(n)")
            #expect(message.keyString == "key-\(n % 20)")
            #expect(message.header("empty") != nil && message.header("empty")?.value == nil)
            #expect(reports[message.keyString!]?.partition == message.partition)
        }
        // Per partition, offsets arrive in order without gaps.
        for partition in Set(messages.map(\.partition)) {
            let offsets = messages.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == Array(offsets.first!..<(offsets.first! + Int64(offsets.count))))
        }
        await consumer.close()
        try await producer.close()
    }

    @Test("the idempotent producer keeps order with no duplicates under injected Produce errors", .timeLimit(.minutes(3)))
    func idempotentUnderErrors() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("idempotent")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try producer(cluster, ["linger.ms": "5", "retry.backoff.ms": "10"], maxInFlight: 500)
        _ = try await producer.send(ProducerRecord(topic: topic, partition: 0, key: nil, value: "start"))
        try cluster.pushRequestErrors(api: .produce, errorNames: [
            "NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            "LEADER_NOT_AVAILABLE", "REQUEST_TIMED_OUT", "NOT_LEADER_FOR_PARTITION", "NOT_ENOUGH_REPLICAS",
        ])
        let count = 3000
        for i in 0..<count {
            try await producer.sendAndForget(ProducerRecord(topic: topic, partition: 0, key: nil, value: "\(i)"))
            #expect(producer.inFlightCount <= 500)
        }
        try await producer.flush(timeout: .seconds(30))
        let window = try await KafkaConsumer.readWindow(
            configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers), partition: TopicPartition(topic, 0),
            from: 1, maxMessages: count + 10, timeout: .seconds(20))
        #expect(window.count == count)
        #expect(window.compactMap { $0.valueString.flatMap { Int($0) } } == Array(0..<count))
        try await producer.close()
    }

    @Test("a group shares partitions and rebalances when a member leaves", .timeLimit(.minutes(3)),
          arguments: ["range,roundrobin", "cooperative-sticky"])
    func groupRebalance(strategy: String) async throws {
        let cluster = try EmbeddedCluster(brokers: 3)
        let topic = uniqueName("group")
        try cluster.createTopic(topic, partitions: 6)
        let group = uniqueName("g")
        let members = try (0..<3).map { _ in try consumer(cluster, group: group, ["partition.assignment.strategy": strategy]) }
        for member in members { try member.subscribe([topic]) }
        let all = Set((0..<6).map { TopicPartition(topic, Int32($0)) })
        try await eventually(.seconds(30), "three members share all six partitions") {
            let assignments = try members.map { Set(try $0.assignment()) }
            return assignments.allSatisfy { !$0.isEmpty } && assignments.reduce(0) { $0 + $1.count } == 6
                && assignments.reduce(Set()) { $0.union($1) } == all
        }
        #expect(members.allSatisfy { $0.memberID != nil })
        #expect(members.allSatisfy { ($0.generationID ?? -1) >= 1 })
        let expectedProtocol = strategy == "cooperative-sticky" ? "COOPERATIVE" : "EAGER"
        #expect(members.allSatisfy { $0.rebalanceProtocol == expectedProtocol })

        await members[2].close()
        let remaining = Array(members[0..<2])
        try await eventually(.seconds(30), "two members take over all six partitions") {
            let assignments = try remaining.map { Set(try $0.assignment()) }
            return assignments.reduce(0) { $0 + $1.count } == 6 && assignments.reduce(Set()) { $0.union($1) } == all
        }
        // The group events were delivered in order to each member.
        var sawAssigned = false
        let events = remaining[0].events
        while let event = try await within(.seconds(5), "an assignment event", { var i = events.makeAsyncIterator(); return try await i.next() }) {
            if case .partitionsAssigned = event { sawAssigned = true; break }
        }
        #expect(sawAssigned)
        // Both remaining members receive records after the rebalance.
        let producer = try producer(cluster)
        for i in 0..<60 { try await producer.sendAndForget(ProducerRecord(topic: topic, partition: Int32(i % 6), key: nil, value: "\(i)")) }
        try await producer.flush()
        async let a = collectUntilQuiet(remaining[0])
        async let b = collectUntilQuiet(remaining[1])
        let received = try await a + b
        #expect(Set(received.compactMap(\.valueString)) == Set((0..<60).map(String.init)))
        #expect(received.count == 60)
        for member in remaining { await member.close() }
        try await producer.close()
    }

    /// Reads records until none arrives for 2 s (each member sees only its share).
    func collectUntilQuiet(_ consumer: KafkaConsumer) async throws -> [KafkaMessage] {
        let seen = Mutex<[KafkaMessage]>([])
        while true {
            let next: KafkaMessage?
            do {
                next = try await within(.seconds(3), "a message") {
                    var iterator = consumer.messages.makeAsyncIterator()
                    return try await iterator.next()
                }
            } catch is TestTimeout {
                return seen.withLock { $0 }
            }
            guard let next else { return seen.withLock { $0 } }
            seen.withLock { $0.append(next) }
        }
    }

    @Test("after a manual commit, a restarted consumer resumes from the committed offset", .timeLimit(.minutes(3)))
    func commitAndRestart() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("commit")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try producer(cluster)
        for i in 0..<20 { try await producer.sendAndForget(ProducerRecord(topic: topic, key: nil, value: "\(i)")) }
        try await producer.flush()
        let group = uniqueName("g")
        let tp = TopicPartition(topic, 0)

        let first = try consumer(cluster, group: group)
        try first.subscribe([topic])
        let firstBatch = try await collect(first, count: 10)
        #expect(firstBatch.map(\.offset) == Array(0..<10))
        try first.store(firstBatch[9])
        try await first.commit()
        #expect(try await first.committed([tp]) == [TopicPartitionOffset(tp, offset: 10)])
        let lag = try await first.lag([tp])
        #expect(lag.first?.committed == 10)
        #expect(lag.first?.highWatermark == 20)
        #expect(lag.first?.lag == 10)
        await first.close()

        let second = try consumer(cluster, group: group)
        try second.subscribe([topic])
        let secondBatch = try await collect(second, count: 10)
        #expect(secondBatch.map(\.offset) == Array(10..<20))
        #expect(secondBatch.map(\.valueString) == (10..<20).map { String($0) })
        try await second.commit([secondBatch.last!.nextOffset])
        #expect(try await second.committed([tp]).first?.offset == 20)
        await second.close()
        try await producer.close()
    }

    @Test("the revoke hook runs before partitions go and can commit what was processed", .timeLimit(.minutes(3)))
    func revokeHookCommits() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("revoke")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try producer(cluster)
        for i in 0..<12 { try await producer.sendAndForget(ProducerRecord(topic: topic, key: nil, value: "\(i)")) }
        try await producer.flush()
        let group = uniqueName("g")
        let processed = Mutex<[TopicPartitionOffset]>([])
        let revoked = Mutex<[TopicPartition]>([])
        let first = try KafkaConsumer(
            configuration: KafkaConfiguration(bootstrapServers: cluster.bootstrapServers, fastGroup.merging(["group.id": group]) { $1 }),
            onRevoke: { revocation in
                revoked.withLock { $0.append(contentsOf: revocation.partitions) }
                let offsets = processed.withLock { $0 }
                try? revocation.commit(offsets)
            })
        try first.subscribe([topic])
        let batch = try await collect(first, count: 5)
        processed.withLock { $0 = [batch.last!.nextOffset] }
        await first.close()  // leaving the group revokes the partition: the hook commits offset 5
        #expect(revoked.withLock { $0 } == [TopicPartition(topic, 0)])

        let second = try consumer(cluster, group: group)
        try second.subscribe([topic])
        let rest = try await collect(second, count: 7)
        #expect(rest.map(\.offset) == Array(5..<12))
        await second.close()
        try await producer.close()
    }

    @Test("transaction errors carry librdkafka's class: abortable errors recover after abort, fencing is fatal", .timeLimit(.minutes(3)))
    func transactionErrorClasses() async throws {
        // The mock does not enforce transaction outcomes, but it does return injected errors, and
        // librdkafka classifies them in its rd_kafka_error_t objects.
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("txn-errors")
        try cluster.createTopic(topic, partitions: 1)
        let producer = try TransactionalProducer(configuration: KafkaConfiguration(
            bootstrapServers: cluster.bootstrapServers, ["transactional.id": uniqueName("tx"), "message.timeout.ms": "5000"]))
        try await producer.initTransactions()

        try producer.beginTransaction()
        try cluster.pushRequestErrors(api: .produce, errorNames: ["MSG_SIZE_TOO_LARGE"])
        let denied = try await #require(throws: KafkaError.self) { try await producer.send(ProducerRecord(topic: topic, key: nil, value: "denied")) }
        #expect(denied.codeName == "MSG_SIZE_TOO_LARGE")
        let abortable = try await #require(throws: KafkaError.self) { try await producer.commitTransaction() }
        #expect(abortable.kind == .transactionAbortable, "\(abortable)")
        try await producer.abortTransaction()

        // The producer recovers. librdkafka 2.0.2 may still purge (_PURGE_QUEUE) a record sent
        // right after the abort while it bumps the producer epoch, so allow a second attempt.
        var committed = false
        var attempts: [String] = []
        for _ in 0..<3 where !committed {
            do {
                try producer.beginTransaction()
                let report = try await producer.send(ProducerRecord(topic: topic, key: nil, value: "after abort"))
                #expect(report.offset >= 0)
                try await producer.commitTransaction()
                committed = true
            } catch let error as KafkaError {
                attempts.append(error.description)
                #expect(error.kind != .fatal, "\(error)")
                try await producer.abortTransaction()
            }
        }
        #expect(committed, "\(attempts)")

        try producer.beginTransaction()
        try cluster.pushRequestErrors(api: .addPartitionsToTxn, errorNames: ["PRODUCER_FENCED"])
        _ = try? await producer.send(ProducerRecord(topic: topic, key: nil, value: "fenced"))
        let fatal = try await #require(throws: KafkaError.self) { try await producer.commitTransaction() }
        #expect(fatal.kind == .fatal, "\(fatal)")
        #expect(producer.fatalError?.kind == .fatal)
        await #expect(throws: KafkaError.self) { try producer.beginTransaction() }
        await producer.close()
    }

    @Test("a broker taken down and brought back loses no acknowledged record", .timeLimit(.minutes(3)))
    func brokerDownAndUp() async throws {
        let cluster = try EmbeddedCluster(brokers: 3)
        let topic = uniqueName("brokerdown")
        try cluster.createTopic(topic, partitions: 3, replicationFactor: 3)
        let producer = try producer(cluster, ["linger.ms": "2"])
        let count = 600
        for i in 0..<count {
            if i == 200 { try cluster.setBrokerDown(2) }
            try await producer.sendAndForget(ProducerRecord(topic: topic, partition: Int32(i % 3), key: nil, value: "\(i)"))
            if i == 400 { try await Task.sleep(for: .milliseconds(500)); try cluster.setBrokerUp(2) }
        }
        try await producer.flush(timeout: .seconds(40))
        let consumer = try consumer(cluster, group: uniqueName("g"))
        try consumer.subscribe([topic])
        let messages = try await collect(consumer, count: count, timeout: .seconds(30))
        #expect(messages.count == count)
        #expect(Set(messages.compactMap(\.valueString)) == Set((0..<count).map(String.init)))
        for partition in 0..<3 {
            let values = messages.filter { $0.partition == Int32(partition) }.compactMap { $0.valueString.flatMap { Int($0) } }
            #expect(values == Array(stride(from: partition, to: count, by: 3)), "partition \(partition) in order, no duplicates")
        }
        await consumer.close()
        try await producer.close()
    }

    @Test("a slow reader keeps the buffer bounded: partitions pause and resume, nothing lost or repeated", .timeLimit(.minutes(3)))
    func backpressure() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("backpressure")
        try cluster.createTopic(topic, partitions: 2)
        let producer = try producer(cluster)
        // More than the buffer's hard limit (capacity + room for records fetched before a pause).
        let count = 3000
        for i in 0..<count { try await producer.sendAndForget(ProducerRecord(topic: topic, partition: Int32(i % 2), key: nil, value: "\(i)")) }
        try await producer.flush()

        let capacity = 40
        let consumer = try consumer(cluster, group: uniqueName("g"), bufferCapacity: capacity)
        try consumer.subscribe([topic])
        var received: [KafkaMessage] = []
        var iterator = consumer.messages.makeAsyncIterator()
        while received.count < count {
            guard let message = try await iterator.next() else { break }
            received.append(message)
            #expect(consumer.bufferStatistics.bufferedMessages <= consumer.bufferStatistics.hardLimit)
            if received.count % 200 == 0 { try await Task.sleep(for: .milliseconds(150)) }  // a slow reader
        }
        let statistics = consumer.bufferStatistics
        #expect(statistics.hardLimit > capacity && statistics.maxBufferedMessages <= statistics.hardLimit)
        #expect(statistics.backpressurePauses >= 2)
        #expect(received.count == count)
        for partition in 0..<2 {
            let values = received.filter { $0.partition == Int32(partition) }.compactMap { $0.valueString.flatMap { Int($0) } }
            #expect(values == Array(stride(from: partition, to: count, by: 2)))
        }
        await consumer.close()
        try await producer.close()
    }

    @Test("a bounded window of a partition is read without a group; seek, watermarks and offsets by time work", .timeLimit(.minutes(3)))
    func windowSeekAndTimes() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("window")
        try cluster.createTopic(topic, partitions: 2)
        let producer = try producer(cluster)
        let base: Int64 = 1_700_000_000_000
        for i in 0..<50 {
            _ = try await producer.send(ProducerRecord(topic: topic, partition: 1, key: nil, value: Array("\(i)".utf8), timestampMilliseconds: base + Int64(i) * 1000))
        }
        let configuration = KafkaConfiguration(bootstrapServers: cluster.bootstrapServers)
        let tp = TopicPartition(topic, 1)
        let window = try await KafkaConsumer.readWindow(configuration: configuration, partition: tp, from: 10, maxMessages: 5)
        #expect(window.map(\.offset) == Array(10..<15))
        #expect(window.first?.timestampMilliseconds == base + 10_000)
        let tail = try await KafkaConsumer.readWindow(configuration: configuration, partition: tp, from: 45, maxMessages: 100)
        #expect(tail.map(\.offset) == Array(45..<50), "stops at the end of the partition")
        let empty = try await KafkaConsumer.readWindow(configuration: configuration, partition: TopicPartition(topic, 0), from: 0, maxMessages: 10)
        #expect(empty.isEmpty)

        let consumer = try consumer(cluster, group: nil)
        #expect(try await consumer.watermarks(tp) == (low: 0, high: 50))
        try consumer.assign([TopicPartitionOffset(tp, offset: 40)])
        let firstRead = try await collect(consumer, count: 1)
        #expect(firstRead.first?.offset == 40)
        try await consumer.seek([TopicPartitionOffset(tp, offset: 5)])
        let afterSeek = try await collect(consumer, count: 1)
        #expect(afterSeek.first?.offset == 5)
        await consumer.close()
        try await producer.close()
    }

    @Test("pause stops a partition until resume", .timeLimit(.minutes(3)))
    func pauseResume() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("pause")
        try cluster.createTopic(topic, partitions: 2)
        let producer = try producer(cluster)
        let consumer = try consumer(cluster, group: nil)
        let p0 = TopicPartition(topic, 0)
        let p1 = TopicPartition(topic, 1)
        try consumer.assign([TopicPartitionOffset(p0, offset: KafkaOffset.beginning), TopicPartitionOffset(p1, offset: KafkaOffset.beginning)])
        try consumer.pause([p0])
        for i in 0..<10 { _ = try await producer.send(ProducerRecord(topic: topic, partition: Int32(i % 2), key: nil, value: "\(i)")) }
        let unpaused = try await collect(consumer, count: 5)
        #expect(unpaused.allSatisfy { $0.partition == 1 })
        try consumer.resume([p0])
        let resumed = try await collect(consumer, count: 5)
        #expect(resumed.allSatisfy { $0.partition == 0 })
        #expect(resumed.map(\.offset) == Array(0..<5))
        await consumer.close()
        try await producer.close()
    }
}
