import CRdKafka
import Synchronization

/// The producer side near C: produces records with a per-message id as the opaque and completes
/// the matching waiter when the delivery-report event for that id comes back on the poll thread.
final class RDKafkaProducer: Sendable {
    enum Waiter {
        case awaiting(CheckedContinuation<DeliveryReport, any Error>)
        /// Fire-and-forget: a failure is remembered and reported by the next `flush`.
        case forgotten
        /// One record of a batch sent with `KafkaProducer.sendBatch`: its outcome goes to slot `index`.
        case batch(DeliveryBatch, index: Int)
    }

    struct State {
        var nextID: UInt = 0
        var waiters: [UInt: Waiter] = [:]
        var forgottenFailures = 0
        var firstForgottenFailure: KafkaError?
        var fatal: KafkaError?
        var closed = false
    }

    let client: RDKafkaClient
    let window: InFlightWindow
    let state = Mutex(State())
    let logHandler: KafkaLogHandler?

    init(properties: [String: String], maxInFlight: Int, logHandler: KafkaLogHandler?) throws(KafkaError) {
        client = try RDKafkaClient(type: .producer, properties: properties, events: RD_KAFKA_EVENT_DR)
        window = InFlightWindow(limit: maxInFlight)
        self.logHandler = logHandler
        client.startPolling(
            handle: { [self] event in handle(event) },
            shutdown: { [self] _ in failAll(KafkaError(kind: .state, message: "the producer was closed before the record was acknowledged")) })
    }

    // MARK: producing

    /// Registers a waiter, then hands the record to librdkafka. The caller holds a window slot.
    func produce(_ record: ProducerRecord, waiter: Waiter) throws(KafkaError) {
        let id: UInt = try state.withLock { (s: inout State) throws(KafkaError) -> UInt in
            if let fatal = s.fatal { throw fatal }
            if s.closed { throw KafkaError(kind: .state, message: "the producer is closed", context: ["topic": record.topic]) }
            s.nextID += 1
            s.waiters[s.nextID] = waiter
            return s.nextID
        }
        if let error = enqueue(record, id: id) {
            _ = state.withLock { $0.waiters.removeValue(forKey: id) }
            throw error
        }
    }

    /// Calls `rd_kafka_produceva`; returns the error if librdkafka refused the record.
    private func enqueue(_ record: ProducerRecord, id: UInt) -> KafkaError? {
        var headers: OpaquePointer? = nil
        if !record.headers.isEmpty {
            headers = rd_kafka_headers_new(record.headers.count)
            for header in record.headers {
                if let value = header.value {
                    value.withUnsafeBytes { bytes in
                        _ = rd_kafka_header_add(headers, header.name, -1, bytes.baseAddress, bytes.count)
                    }
                } else {
                    _ = rd_kafka_header_add(headers, header.name, -1, nil, 0)
                }
            }
        }
        let error: OpaquePointer? = record.topic.withCString { topic in
            withOptionalBytes(record.key) { key in
                withOptionalBytes(record.value) { value in
                    var values: [rd_kafka_vu_t] = []
                    var vu = rd_kafka_vu_t()
                    vu.vtype = RD_KAFKA_VTYPE_TOPIC
                    vu.u.cstr = topic
                    values.append(vu)
                    vu = rd_kafka_vu_t()
                    vu.vtype = RD_KAFKA_VTYPE_PARTITION
                    vu.u.i32 = record.partition ?? -1  // RD_KAFKA_PARTITION_UA: let the partitioner choose
                    values.append(vu)
                    vu = rd_kafka_vu_t()
                    vu.vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    vu.u.i = RD_KAFKA_MSG_F_COPY  // librdkafka copies key and value before returning
                    values.append(vu)
                    if let key {
                        vu = rd_kafka_vu_t()
                        vu.vtype = RD_KAFKA_VTYPE_KEY
                        vu.u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress)
                        vu.u.mem.size = key.count
                        values.append(vu)
                    }
                    if let value {
                        vu = rd_kafka_vu_t()
                        vu.vtype = RD_KAFKA_VTYPE_VALUE
                        vu.u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                        vu.u.mem.size = value.count
                        values.append(vu)
                    }
                    if let headers {
                        vu = rd_kafka_vu_t()
                        vu.vtype = RD_KAFKA_VTYPE_HEADERS
                        vu.u.headers = headers
                        values.append(vu)
                    }
                    if let timestamp = record.timestampMilliseconds {
                        vu = rd_kafka_vu_t()
                        vu.vtype = RD_KAFKA_VTYPE_TIMESTAMP
                        vu.u.i64 = timestamp
                        values.append(vu)
                    }
                    vu = rd_kafka_vu_t()
                    vu.vtype = RD_KAFKA_VTYPE_OPAQUE
                    vu.u.ptr = UnsafeMutableRawPointer(bitPattern: id)
                    values.append(vu)
                    return rd_kafka_produceva(client.handle, values, values.count)
                }
            }
        }
        // The error context is built only on failure (a dictionary per record showed in profiles).
        if let error, let failure = RDKafkaErrors.consume(error, context: ["topic": record.topic]
            .merging(record.partition.map { ["partition": String($0)] } ?? [:]) { a, _ in a }) {
            // On failure the headers were not taken over by librdkafka.
            if let headers { rd_kafka_headers_destroy(headers) }
            return failure
        }
        return nil
    }

    // MARK: poll thread

    private func handle(_ event: OpaquePointer) {
        switch rd_kafka_event_type(event) {
        case RD_KAFKA_EVENT_DR:
            while let message = rd_kafka_event_message_next(event) {
                delivered(message.pointee)
            }
        case RD_KAFKA_EVENT_ERROR:
            let error = client.errorOf(event: event)
            if error.kind == .fatal {
                state.withLock { $0.fatal = $0.fatal ?? error }
            }
            logHandler?(KafkaLogMessage(level: error.kind == .fatal ? 2 : 4, facility: "ERROR", message: error.description))
        case RD_KAFKA_EVENT_LOG:
            if let logHandler, let line = RDKafkaClient.logMessage(of: event) { logHandler(line) }
        default:
            break  // not enabled; nothing to do
        }
    }

    private func delivered(_ message: rd_kafka_message_t) {
        let id = UInt(bitPattern: message._private)
        let topic = message.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        guard let waiter else { return }  // not ours (or already failed at shutdown): skip
        window.release()
        if message.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            let report = DeliveryReport(topic: topic, partition: message.partition, offset: message.offset)
            switch waiter {
            case .awaiting(let continuation): continuation.resume(returning: report)
            case .batch(let batch, let index): batch.complete(index, .success(report))
            case .forgotten: break
            }
        } else {
            var error = RDKafkaErrors.error(
                code: message.err, context: ["topic": topic, "partition": String(message.partition)])
            if let fatal = state.withLock({ $0.fatal }) { error.kind = .fatal; error.context["fatal"] = fatal.message }
            switch waiter {
            case .awaiting(let continuation): continuation.resume(throwing: error)
            case .batch(let batch, let index): batch.complete(index, .failure(error))
            case .forgotten:
                state.withLock { s in
                    s.forgottenFailures += 1
                    if s.firstForgottenFailure == nil { s.firstForgottenFailure = error }
                }
            }
        }
    }

    private func failAll(_ error: KafkaError) {
        let waiters = state.withLock { s in
            s.closed = true
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for (_, waiter) in waiters {
            switch waiter {
            case .awaiting(let continuation): continuation.resume(throwing: error)
            case .batch(let batch, let index): batch.complete(index, .failure(error))
            case .forgotten: break
            }
        }
        window.close(error)
    }

    // MARK: blocking calls

    func flushBlocking(timeoutMilliseconds: Int32) throws(KafkaError) {
        let err = rd_kafka_flush(client.handle, timeoutMilliseconds)
        if err == RD_KAFKA_RESP_ERR__TIMED_OUT {
            let remaining = rd_kafka_outq_len(client.handle)
            throw KafkaError(
                kind: .timeout, code: err.rawValue, codeName: RDKafkaErrors.name(err.rawValue),
                message: "flush timed out with \(remaining) records or requests not yet acknowledged",
                context: ["operation": "flush"])
        }
        try RDKafkaErrors.check(err, context: ["operation": "flush"])
    }

    /// Failures of fire-and-forget records since the last call, and resets the count.
    func takeForgottenFailures() -> (count: Int, first: KafkaError?) {
        state.withLock { s in
            defer { s.forgottenFailures = 0; s.firstForgottenFailure = nil }
            return (s.forgottenFailures, s.firstForgottenFailure)
        }
    }

    var fatalError: KafkaError? { state.withLock { $0.fatal } }

    // MARK: transactions (blocking ones run via client.blocking)

    func initTransactionsBlocking(timeoutMilliseconds: Int32) throws(KafkaError) {
        try RDKafkaErrors.check(rd_kafka_init_transactions(client.handle, timeoutMilliseconds), context: ["operation": "init_transactions"])
    }

    func beginTransaction() throws(KafkaError) {
        try RDKafkaErrors.check(rd_kafka_begin_transaction(client.handle), context: ["operation": "begin_transaction"])
    }

    func sendOffsetsBlocking(_ offsets: [TopicPartitionOffset], metadata: ConsumerGroupMetadata, timeoutMilliseconds: Int32) throws(KafkaError) {
        let list = RDKafkaTopicPartitionList(offsets)
        let error = withExtendedLifetime(metadata) {
            list.withPointer { rd_kafka_send_offsets_to_transaction(client.handle, $0, metadata.pointer, timeoutMilliseconds) }
        }
        try RDKafkaErrors.check(error, context: ["operation": "send_offsets_to_transaction", "group": metadata.groupID])
    }

    func commitTransactionBlocking(timeoutMilliseconds: Int32) throws(KafkaError) {
        try RDKafkaErrors.check(rd_kafka_commit_transaction(client.handle, timeoutMilliseconds), context: ["operation": "commit_transaction"])
    }

    func abortTransactionBlocking(timeoutMilliseconds: Int32) throws(KafkaError) {
        try RDKafkaErrors.check(rd_kafka_abort_transaction(client.handle, timeoutMilliseconds), context: ["operation": "abort_transaction"])
    }
}

private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeBufferPointer<UInt8>?) -> R) -> R {
    guard let bytes else { return body(nil) }
    if bytes.isEmpty {
        // An empty (not null) payload still needs a valid pointer.
        var zero: UInt8 = 0
        return withUnsafePointer(to: &zero) { body(UnsafeBufferPointer(start: $0, count: 0)) }
    }
    return bytes.withUnsafeBufferPointer { body($0) }
}

/// The consumer's group metadata (`rd_kafka_consumer_group_metadata_t`), needed to send offsets
/// to a transaction so the group coordinator can fence zombie instances (KIP-447).
///
/// `@unchecked Sendable`: the wrapped C object is immutable after creation and only read by
/// librdkafka; this class destroys it exactly once in `deinit`.
public final class ConsumerGroupMetadata: @unchecked Sendable, CustomStringConvertible {
    let pointer: OpaquePointer
    /// The consumer group id.
    public let groupID: String
    /// The group generation id at the time the metadata was taken, when it could be read.
    public let generationID: Int32?
    /// The member id at the time the metadata was taken, when it could be read.
    public let memberID: String?

    init(owning pointer: OpaquePointer, groupID: String) {
        self.pointer = pointer
        self.groupID = groupID
        let parsed = ConsumerGroupMetadata.parse(pointer)
        generationID = parsed?.generation
        memberID = parsed?.member
    }

    deinit { rd_kafka_consumer_group_metadata_destroy(pointer) }

    public var description: String {
        "group \(groupID) generation \(generationID.map(String.init) ?? "?") member \(memberID ?? "?")"
    }

    /// Reads generation and member id from librdkafka's serialized form
    /// (`rd_kafka_consumer_group_metadata_write`: "CGMDv2:" magic, then generation id (int32),
    /// then group id, member id and group instance id as length-prefixed strings). Returns nil
    /// if the layout is not the one expected, rather than guessing.
    static func parse(_ pointer: OpaquePointer) -> (generation: Int32, member: String)? {
        var buffer: UnsafeMutableRawPointer?
        var size = 0
        let error = rd_kafka_consumer_group_metadata_write(pointer, &buffer, &size)
        if RDKafkaErrors.consume(error) != nil { return nil }
        guard let buffer else { return nil }
        defer { rd_kafka_mem_free(nil, buffer) }
        let bytes = [UInt8](UnsafeRawBufferPointer(start: buffer, count: size))
        return SerializedGroupMetadata.parse(bytes)
    }
}
