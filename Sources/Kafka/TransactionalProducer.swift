/// A transactional producer: records and consumer offsets commit or abort together.
///
/// Needs `transactional.id` (stable per worker, so a restarted instance fences its predecessor).
/// Usage: ``initTransactions(timeout:)`` once, then per batch ``beginTransaction()``, ``send(_:)``
/// / ``sendAndForget(_:)``, ``sendOffsets(_:groupMetadata:timeout:)``, ``commitTransaction(timeout:)``.
///
/// Errors carry librdkafka's classification in ``KafkaError/kind``:
/// - `.retriable`: call the same method again;
/// - `.transactionAbortable`: ``abortTransaction(timeout:)``, rewind the consumer to the last
///   committed offsets and redo the batch;
/// - `.fatal` (fenced by a newer instance with the same `transactional.id`, ...): this producer is
///   finished; build a new one.
public final class TransactionalProducer: Sendable {
    let producer: KafkaProducer

    /// The `transactional.id`.
    public let transactionalID: String

    /// Creates a transactional producer. `transactional.id` must be set.
    public init(configuration: KafkaConfiguration, maxInFlight: Int = 10_000, logHandler: KafkaLogHandler? = nil) throws(KafkaError) {
        guard let id = configuration["transactional.id"], !id.isEmpty else {
            throw KafkaError(
                kind: .configuration, message: "a transactional producer needs the property transactional.id",
                context: ["property": "transactional.id"])
        }
        transactionalID = id
        producer = try KafkaProducer(configuration: configuration, maxInFlight: maxInFlight, logHandler: logHandler)
    }

    /// Registers the `transactional.id` with the coordinator, fencing older instances and
    /// finishing (committing or aborting) their open transaction. Call once before the first
    /// transaction; safe to call again after a `.retriable` or `.timeout` error.
    public func initTransactions(timeout: Duration = .seconds(30)) async throws {
        let core = producer.core
        let ms = milliseconds(timeout)
        try await core.client.blocking { () throws(KafkaError) in try core.initTransactionsBlocking(timeoutMilliseconds: ms) }
    }

    /// Starts a transaction (local; no broker round trip).
    public func beginTransaction() throws(KafkaError) {
        try producer.core.beginTransaction()
    }

    /// Produces a record in the current transaction and waits for its acknowledgement.
    public func send(_ record: ProducerRecord) async throws -> DeliveryReport {
        try await producer.send(record)
    }

    /// Produces a record in the current transaction without waiting; ``commitTransaction(timeout:)``
    /// flushes it and fails if it failed.
    public func sendAndForget(_ record: ProducerRecord) async throws {
        try await producer.sendAndForget(record)
    }

    /// Produces records in the current transaction and returns each one's own outcome once all
    /// are acknowledged or failed (see ``KafkaProducer/sendBatch(_:)``). A failed record leaves
    /// the transaction to be aborted; the outcomes say which record it was and why.
    public func sendBatch(_ records: [ProducerRecord]) async -> [Result<DeliveryReport, KafkaError>] {
        await producer.sendBatch(records)
    }

    /// Adds consumer offsets (next offsets to read) to the transaction, with the consumer's group
    /// metadata so the coordinator can fence zombie consumers (KIP-447).
    public func sendOffsets(
        _ offsets: [TopicPartitionOffset], groupMetadata: ConsumerGroupMetadata, timeout: Duration = .seconds(30)
    ) async throws {
        guard !offsets.isEmpty else { return }
        let core = producer.core
        let ms = milliseconds(timeout)
        try await core.client.blocking { () throws(KafkaError) in
            try core.sendOffsetsBlocking(offsets, metadata: groupMetadata, timeoutMilliseconds: ms)
        }
    }

    /// Flushes and commits the transaction (on a dedicated thread).
    public func commitTransaction(timeout: Duration = .seconds(30)) async throws {
        let core = producer.core
        let ms = milliseconds(timeout)
        try await core.client.blocking { () throws(KafkaError) in try core.commitTransactionBlocking(timeoutMilliseconds: ms) }
        // Fire-and-forget failures cannot have been committed; librdkafka would have failed the
        // commit. Clear them so they do not surface in a later transaction.
        _ = core.takeForgottenFailures()
    }

    /// Aborts the transaction: its records stay invisible to read_committed readers and its
    /// offsets are not applied.
    public func abortTransaction(timeout: Duration = .seconds(30)) async throws {
        let core = producer.core
        let ms = milliseconds(timeout)
        try await core.client.blocking { () throws(KafkaError) in try core.abortTransactionBlocking(timeoutMilliseconds: ms) }
        _ = core.takeForgottenFailures()
    }

    /// Records sent and not yet acknowledged.
    public var inFlightCount: Int { producer.inFlightCount }

    /// The fatal error that made this producer unusable, if one happened.
    public var fatalError: KafkaError? { producer.fatalError }

    /// Stops the producer (records still outstanding fail). Does not commit.
    public func close() async {
        producer.core.client.requestStop()
        await producer.core.client.stopAndWait()
    }
}
