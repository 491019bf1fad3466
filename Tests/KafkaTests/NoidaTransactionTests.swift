import Foundation
import Kafka
import Testing

/// Against noida-db, a broker that enforces transactions (the mock cluster does not) and
/// implements static membership (the 2.0.2 mock rebalances instead).
/// Needs LEVEE_NOIDA_BOOTSTRAP (scripts/test sets it); skips with a printed reason otherwise.
@Suite("Kafka on noida-db: transactions, admin, static membership")
struct NoidaTransactionTests {
    struct Setup {
        let bootstrap: String
        let input: String
        let output: String
        let group: String
    }

    /// Creates an input topic with `count` records and an empty output topic, with the Admin API.
    func setUp(_ bootstrap: String, count: Int = 10) async throws -> Setup {
        let setup = Setup(bootstrap: bootstrap, input: uniqueName("tx-in"), output: uniqueName("tx-out"), group: uniqueName("tx-g"))
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        let created = try await admin.createTopics([
            NewTopic(name: setup.input, partitions: 2, replicationFactor: 1),
            NewTopic(name: setup.output, partitions: 1, replicationFactor: 1),
        ], timeout: .seconds(10))
        #expect(created[setup.input] == .created)
        let producer = try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        for i in 0..<count {
            _ = try await producer.send(ProducerRecord(topic: setup.input, partition: Int32(i % 2), key: "k\(i)", value: "job-\(i)"))
        }
        try await producer.close()
        return setup
    }

    func groupConsumer(_ setup: Setup) throws -> KafkaConsumer {
        try KafkaConsumer(configuration: KafkaConfiguration(
            bootstrapServers: setup.bootstrap, fastGroup.merging(["group.id": setup.group]) { $1 }))
    }

    func transactionalProducer(_ bootstrap: String, id: String) throws -> TransactionalProducer {
        try TransactionalProducer(configuration: KafkaConfiguration(
            bootstrapServers: bootstrap, ["transactional.id": id, "transaction.timeout.ms": "10000"]))
    }

    /// Reads everything in the output partition as a read_committed (or read_uncommitted) reader.
    func readOutput(_ setup: Setup, isolation: String = "read_committed") async throws -> [KafkaMessage] {
        try await KafkaConsumer.readWindow(
            configuration: KafkaConfiguration(bootstrapServers: setup.bootstrap, ["isolation.level": isolation]),
            partition: TopicPartition(setup.output, 0), from: KafkaOffset.beginning, maxMessages: 1000, timeout: .seconds(10))
    }

    /// Consumes all input in the group and produces one output per input inside a transaction,
    /// with the input offsets; then commits or aborts.
    func runTransaction(_ setup: Setup, commit: Bool) async throws -> [TopicPartitionOffset] {
        let consumer = try groupConsumer(setup)
        try consumer.subscribe([setup.input])
        let inputs = try await collect(consumer, count: 10)
        let producer = try transactionalProducer(setup.bootstrap, id: uniqueName("tx"))
        try await producer.initTransactions()
        try producer.beginTransaction()
        for input in inputs {
            try await producer.sendAndForget(ProducerRecord(topic: setup.output, partition: 0, key: input.key, value: bytes("result-of-\(input.valueString!)")))
        }
        var next: [TopicPartition: Int64] = [:]
        for input in inputs { next[input.topicPartition] = max(next[input.topicPartition] ?? 0, input.offset + 1) }
        let offsets = next.map { TopicPartitionOffset($0.key, offset: $0.value) }
        let metadata = try consumer.groupMetadata()
        #expect(metadata.groupID == setup.group)
        try await producer.sendOffsets(offsets, groupMetadata: metadata)
        if commit { try await producer.commitTransaction() } else { try await producer.abortTransaction() }
        await producer.close()
        await consumer.close()
        return offsets
    }

    @Test("a committed transaction is visible to read_committed readers with its offsets applied", .timeLimit(.minutes(3)))
    func committedTransaction() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let setup = try await setUp(bootstrap)
        let offsets = try await runTransaction(setup, commit: true)
        let output = try await readOutput(setup)
        #expect(output.count == 10)
        #expect(Set(output.compactMap(\.valueString)) == Set((0..<10).map { "result-of-job-\($0)" }))
        let reader = try groupConsumer(setup)
        let committed = try await reader.committed(offsets.map(\.topicPartition))
        #expect(Set(committed) == Set(offsets))
        let lag = try await reader.lag(offsets.map(\.topicPartition))
        #expect(lag.allSatisfy { $0.lag == 0 })
        await reader.close()
    }

    @Test("an aborted transaction is invisible and its offsets are not applied", .timeLimit(.minutes(3)))
    func abortedTransaction() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let setup = try await setUp(bootstrap)
        let offsets = try await runTransaction(setup, commit: false)
        #expect(try await readOutput(setup).isEmpty)
        // The same flow with a commit makes 10 records visible (committedTransaction); here the
        // abort alone hid them. (noida-db 0.2.3 does not show aborted records to
        // read_uncommitted readers either, so that cannot be checked here.)
        let reader = try groupConsumer(setup)
        let committed = try await reader.committed(offsets.map(\.topicPartition))
        #expect(committed.allSatisfy { $0.offset == KafkaOffset.invalid })
        await reader.close()
    }

    @Test("a producer fenced by a newer instance with the same transactional.id gets a fatal error", .timeLimit(.minutes(3)))
    func fencedProducer() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let setup = try await setUp(bootstrap, count: 0)
        let id = uniqueName("fenced")
        let old = try transactionalProducer(bootstrap, id: id)
        try await old.initTransactions()
        try old.beginTransaction()
        _ = try await old.send(ProducerRecord(topic: setup.output, partition: 0, key: "a", value: "from the old instance"))

        let new = try transactionalProducer(bootstrap, id: id)
        try await new.initTransactions()  // fences `old` and aborts its open transaction

        var failure: KafkaError?
        do {
            _ = try await old.send(ProducerRecord(topic: setup.output, partition: 0, key: "b", value: "zombie"))
            try await old.commitTransaction(timeout: .seconds(10))
        } catch let error as KafkaError {
            failure = error
        }
        let error = try #require(failure, "the fenced producer must not commit")
        #expect(error.kind == .fatal, "got \(error)")
        #expect(old.fatalError?.kind == .fatal || error.kind == .fatal)

        // The new instance works, and nothing of the zombie is visible.
        try new.beginTransaction()
        _ = try await new.send(ProducerRecord(topic: setup.output, partition: 0, key: "c", value: "from the new instance"))
        try await new.commitTransaction()
        let output = try await readOutput(setup)
        #expect(output.compactMap(\.valueString) == ["from the new instance"])
        await old.close()
        await new.close()
    }

    @Test("a static member (group.instance.id) that restarts gets its partitions back", .timeLimit(.minutes(3)))
    func staticMembership() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let topic = uniqueName("static")
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        try await admin.createTopics([NewTopic(name: topic, partitions: 4, replicationFactor: 1)])
        let group = uniqueName("g")
        func member(_ instance: String) throws -> KafkaConsumer {
            try KafkaConsumer(configuration: KafkaConfiguration(
                bootstrapServers: bootstrap, fastGroup.merging(["group.id": group, "group.instance.id": instance]) { $1 }))
        }
        let a = try member("instance-a")
        let b = try member("instance-b")
        try a.subscribe([topic])
        try b.subscribe([topic])
        try await eventually(.seconds(30), "both members share the partitions") {
            let (x, y) = (try a.assignment(), try b.assignment())
            return !x.isEmpty && !y.isEmpty && x.count + y.count == 4
        }
        let before = Set(try a.assignment())
        let generation = b.generationID
        await a.close()
        let again = try member("instance-a")
        try again.subscribe([topic])
        try await eventually(.seconds(30), "the restarted member is assigned again") { !(try again.assignment()).isEmpty }
        #expect(Set(try again.assignment()) == before)
        #expect(b.generationID == generation, "the other member saw no rebalance")
        await again.close()
        await b.close()
    }

    @Test("admin creates topics idempotently, with configs, and describes them", .timeLimit(.minutes(3)))
    func adminTopics() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let admin = try KafkaAdmin(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        let name = uniqueName("compacted")
        let topic = NewTopic(name: name, partitions: 3, replicationFactor: 1, configs: ["cleanup.policy": "compact"])
        #expect(try await admin.createTopics([topic]) == [name: .created])
        #expect(try await admin.createTopics([topic]) == [name: .alreadyExisted])
        let described = try await admin.describeTopic(name)
        #expect(described.partitionCount == 3)
        #expect(try await admin.metadata().topic(name)?.partitionCount == 3)
        let config = try await admin.describeTopicConfig(name)
        #expect(config["cleanup.policy"]?.value == "compact")
        let missing = uniqueName("missing")
        let error = try await #require(throws: KafkaError.self) { try await admin.describeTopic(missing) }
        #expect(error.kind == .unknownTopicOrPartition)
        #expect(error.context["topic"] == missing)
    }

    @Test("offsets for times find the first record at or after a time", .timeLimit(.minutes(3)))
    func offsetsForTimes() async throws {
        guard let bootstrap = noidaBootstrap() else { return }
        let setup = try await setUp(bootstrap, count: 0)
        let producer = try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        for i in 0..<10 {
            _ = try await producer.send(ProducerRecord(topic: setup.output, partition: 0, key: nil, value: Array("\(i)".utf8), timestampMilliseconds: base + Int64(i) * 1000))
        }
        let consumer = try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        let tp = TopicPartition(setup.output, 0)
        #expect(try await consumer.offsetsForTimes([tp: base + 4_500]) == [TopicPartitionOffset(tp, offset: 5)])
        #expect(try await consumer.watermarks(tp).high == 10)
        await consumer.close()
        try await producer.close()
    }
}
