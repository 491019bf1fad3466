/// An idempotent Kafka producer.
///
/// Defaults (each can be overridden by setting the property): `enable.idempotence=true`,
/// `acks=all`, `partitioner=murmur2_random` (the Java client's partitioner, so Java and Swift
/// producers put a key on the same partition).
///
/// Records are acknowledged through librdkafka's delivery-report events, served by a dedicated
/// poll thread. ``send(_:)`` returns once the record is acknowledged; ``sendAndForget(_:)``
/// returns once librdkafka has the record and reports failures at the next ``flush(timeout:)``.
/// Both hold a slot of a bounded in-flight window until the acknowledgement arrives, and wait
/// when the window is full: that is the back-pressure, not an unbounded buffer.
public final class KafkaProducer: Sendable {
    /// The properties added when not set explicitly.
    public static let defaultProperties: [String: String] = [
        "enable.idempotence": "true",
        "acks": "all",
        "partitioner": "murmur2_random",
    ]

    let core: RDKafkaProducer
    /// The configuration the producer was built with (defaults applied).
    public let configuration: KafkaConfiguration

    /// Creates a producer. Properties are validated by librdkafka.
    ///
    /// - Parameters:
    ///   - maxInFlight: records sent but not yet acknowledged before ``send(_:)`` waits.
    ///   - logHandler: receives librdkafka's log lines; without one they are dropped.
    /// - Throws: `KafkaError(kind: .configuration)` for a property librdkafka rejects.
    public init(configuration: KafkaConfiguration, maxInFlight: Int = 10_000, logHandler: KafkaLogHandler? = nil) throws(KafkaError) {
        let configuration = configuration.withDefaults(Self.defaultProperties)
        guard maxInFlight > 0 else {
            throw KafkaError(kind: .configuration, message: "maxInFlight must be at least 1", context: ["maxInFlight": String(maxInFlight)])
        }
        self.configuration = configuration
        core = try RDKafkaProducer(properties: configuration.properties, maxInFlight: maxInFlight, logHandler: logHandler)
    }

    deinit {
        core.client.requestStop()
    }

    /// The librdkafka client name (e.g. `rdkafka#producer-1`).
    public var name: String { core.client.name }

    /// Records sent and not yet acknowledged.
    public var inFlightCount: Int { core.window.inUse }

    /// The fatal error that made this producer unusable, if one happened. Rebuild the producer.
    public var fatalError: KafkaError? { core.fatalError }

    /// Produces a record and waits until the broker has acknowledged it (acks=all by default).
    ///
    /// - Returns: where the record was written.
    /// - Throws: `KafkaError` from the delivery report (e.g. `.timeout` when `message.timeout.ms`
    ///   passed, `.unknownTopicOrPartition`), or from librdkafka refusing the record at once.
    public func send(_ record: ProducerRecord) async throws -> DeliveryReport {
        try await core.window.acquire()
        return try await withCheckedThrowingContinuation { continuation in
            do {
                try core.produce(record, waiter: .awaiting(continuation))
            } catch {
                core.window.release()
                continuation.resume(throwing: error)
            }
        }
    }

    /// Produces every record, then waits for all their acknowledgements together; the result
    /// has each record's own delivery report or error, in the order of `records` (one failed
    /// record does not fail the others). Waits for room in the in-flight window as it goes, so
    /// a batch larger than the window is sent as acknowledgements free slots.
    public func send(batch records: [ProducerRecord]) async -> [Result<DeliveryReport, any Error>] {
        let batch = DeliveryBatch(count: records.count)
        for (index, record) in records.enumerated() {
            do {
                try await core.window.acquire()
            } catch {
                batch.complete(index, .failure(error))
                continue
            }
            do {
                try core.produce(record, waiter: .batch(batch, index))
            } catch {
                core.window.release()
                batch.complete(index, .failure(error))
            }
        }
        return await batch.outcomes()
    }

    /// Produces a record without waiting for its acknowledgement. Waits only while the in-flight
    /// window is full. A failed delivery is reported by the next ``flush(timeout:)``.
    public func sendAndForget(_ record: ProducerRecord) async throws {
        try await core.window.acquire()
        do {
            try core.produce(record, waiter: .forgotten)
        } catch {
            core.window.release()
            throw error
        }
    }

    /// Waits until every record sent so far is acknowledged or failed (`rd_kafka_flush`, on a
    /// dedicated thread).
    ///
    /// - Throws: `.timeout` if records are still outstanding after `timeout`; otherwise the first
    ///   failure among fire-and-forget records since the previous flush (with how many failed).
    public func flush(timeout: Duration = .seconds(30)) async throws {
        let core = self.core
        let ms = milliseconds(timeout)
        try await core.client.blocking { () throws(KafkaError) in try core.flushBlocking(timeoutMilliseconds: ms) }
        let failures = core.takeForgottenFailures()
        if var first = failures.first {
            first.context["failedRecords"] = String(failures.count)
            throw first
        }
    }

    /// Brokers and all topics, as this producer's connection sees them. Asking once before the
    /// first send also warms the producer's connections and topic cache, so that send does not
    /// pay for them.
    public func metadata(timeout: Duration = .seconds(10)) async throws -> KafkaClusterMetadata {
        let client = core.client
        let ms = milliseconds(timeout)
        return try await client.blocking { () throws(KafkaError) in try client.metadataBlocking(timeoutMilliseconds: ms) }
    }

    /// Flushes (up to `timeout`) and stops the poll thread. Records still outstanding fail with
    /// `.state`. The producer cannot be used afterwards.
    public func close(timeout: Duration = .seconds(30)) async throws {
        defer { core.client.requestStop() }
        try await flush(timeout: timeout)
        await core.client.stopAndWait()
    }
}
