import CRdKafka
import Dispatch
import Foundation
import Synchronization

/// Owns one `rd_kafka_t` and the queue its events arrive on, and runs the dedicated poll thread
/// that serves that queue.
///
/// `@unchecked Sendable` is safe because librdkafka's `rd_kafka_t` API is thread-safe (its
/// documentation allows calls from any thread), the pointers are immutable after `init`, and the
/// only mutable Swift state (`stopRequested`) is an atomic. `deinit` destroys the queue and then
/// the handle exactly once; it runs only after the poll thread has exited, because the thread
/// holds a strong reference until then.
final class RDKafkaClient: @unchecked Sendable {
    enum ClientType { case producer, consumer }

    let type: ClientType
    /// The `rd_kafka_t *`.
    let handle: OpaquePointer
    /// The queue the poll thread serves: the main queue for producers and admin clients, the
    /// consumer queue (main queue forwarded into it) for consumers.
    let queue: OpaquePointer
    /// Where blocking C calls (flush, commit_transaction, committed, offsets_for_times...) run, so
    /// that they never block a thread of Swift's cooperative pool.
    let blockingQueue: DispatchQueue
    let name: String

    private let stopRequested = Atomic<Bool>(false)
    private let threadExited = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)

    /// Creates the client. `events` is the `RD_KAFKA_EVENT_*` mask to enable; log lines are
    /// routed to the event queue too, so nothing is printed behind the caller's back.
    init(type: ClientType, properties: [String: String], events: Int32) throws(KafkaError) {
        var properties = properties
        properties["log.queue"] = "true"
        let conf = try RDKafkaConf.make(properties)
        rd_kafka_conf_set_events(conf, events | RD_KAFKA_EVENT_LOG | RD_KAFKA_EVENT_ERROR)
        var errorText = [CChar](repeating: 0, count: 512)
        let cType = type == .producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER
        // On success rd_kafka_new takes ownership of conf; on failure it is still ours.
        guard let handle = rd_kafka_new(cType, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(
                kind: .configuration, message: cBufferText(errorText),
                context: ["client": type == .producer ? "producer" : "consumer"])
        }
        self.handle = handle
        self.type = type
        self.name = String(cString: rd_kafka_name(handle))
        if type == .consumer {
            // With a group, forward the main queue to the consumer queue so one thread serves all.
            if properties["group.id"] != nil {
                _ = rd_kafka_poll_set_consumer(handle)
            }
            if let consumerQueue = rd_kafka_queue_get_consumer(handle) {
                queue = consumerQueue
            } else {
                queue = rd_kafka_queue_get_main(handle)
            }
        } else {
            queue = rd_kafka_queue_get_main(handle)
        }
        _ = rd_kafka_set_log_queue(handle, queue)
        blockingQueue = DispatchQueue(label: "levee.kafka.\(name).blocking", attributes: .concurrent)
    }

    deinit {
        rd_kafka_queue_destroy(queue)
        if type == .consumer {
            // The consumer was closed by its poll thread (`rd_kafka_consumer_close_queue`).
            rd_kafka_destroy_flags(handle, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE)
        } else {
            rd_kafka_destroy(handle)
        }
    }

    /// Starts the poll thread. `handle` sees every event (and must not block for long);
    /// `idle` runs after each wake-up; `shutdown` runs on the thread once a stop was requested and
    /// must return when the client is ready to be destroyed.
    func startPolling(
        handle eventHandler: @escaping @Sendable (OpaquePointer) -> Void,
        idle: @escaping @Sendable () -> Void = {},
        shutdown: @escaping @Sendable (RDKafkaClient) -> Void = { _ in }
    ) {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            while !stopRequested.load(ordering: .acquiring) {
                // Blocks in C until an event arrives; the timeout only bounds how late a stop is seen.
                if let event = rd_kafka_queue_poll(queue, 100) {
                    eventHandler(event)
                    rd_kafka_event_destroy(event)
                }
                idle()
            }
            shutdown(self)
            threadExited.signal()
        }
        thread.name = "levee.kafka.\(name).poll"
        thread.start()
    }

    /// Asks the poll thread to stop and wakes it. Does not wait.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        rd_kafka_queue_yield(queue)
    }

    /// Wakes the poll thread (e.g. so that it sees a pause/resume request at once).
    func wake() { rd_kafka_queue_yield(queue) }

    var isStopping: Bool { stopRequested.load(ordering: .acquiring) }

    /// Requests a stop and waits (off the cooperative pool) until the poll thread has exited.
    func stopAndWait() async {
        requestStop()
        guard started.load(ordering: .acquiring) else { return }
        let exited = threadExited
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            blockingQueue.async {
                exited.wait()
                exited.signal()
                continuation.resume()
            }
        }
    }

    /// Runs a blocking C call on `blockingQueue` and awaits its result.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws(KafkaError) -> T) async throws(KafkaError) -> T {
        let result: Result<T, KafkaError> = await withCheckedContinuation { continuation in
            blockingQueue.async {
                do throws(KafkaError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Reads a log event into a Swift value.
    static func logMessage(of event: OpaquePointer) -> KafkaLogMessage? {
        var facility: UnsafePointer<CChar>?
        var text: UnsafePointer<CChar>?
        var level: Int32 = 0
        guard rd_kafka_event_log(event, &facility, &text, &level) == 0 else { return nil }
        return KafkaLogMessage(
            level: level, facility: facility.map { String(cString: $0) } ?? "",
            message: text.map { String(cString: $0) } ?? "")
    }

    /// Reads an error event into a ``KafkaError`` (fatal ones with librdkafka's underlying cause).
    func errorOf(event: OpaquePointer) -> KafkaError {
        let code = rd_kafka_event_error(event)
        var message = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? ""
        if rd_kafka_event_error_is_fatal(event) != 0 {
            var text = [CChar](repeating: 0, count: 512)
            let underlying = rd_kafka_fatal_error(handle, &text, text.count)
            message = cBufferText(text)
            var error = RDKafkaErrors.error(code: underlying, message: message, context: ["client": name])
            error.kind = .fatal
            return error
        }
        if message.isEmpty { message = RDKafkaErrors.text(code.rawValue) }
        return RDKafkaErrors.error(code: code, message: message, context: ["client": name])
    }

    /// The bootstrap list of the mock cluster created by `test.mock.num.brokers`, if any.
    var implicitMockBootstrapServers: String? {
        guard let mock = rd_kafka_handle_mock_cluster(handle) else { return nil }
        return String(cString: rd_kafka_mock_cluster_bootstraps(mock))
    }

    /// Cluster metadata (blocking; call through ``blocking(_:)``).
    func metadataBlocking(timeoutMilliseconds: Int32) throws(KafkaError) -> KafkaClusterMetadata {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 1, nil, &metadata, timeoutMilliseconds)
        try RDKafkaErrors.check(err, context: ["operation": "metadata"])
        guard let metadata else {
            throw KafkaError(kind: .other, message: "librdkafka returned no metadata")
        }
        defer { rd_kafka_metadata_destroy(metadata) }
        let md = metadata.pointee
        var brokers: [KafkaClusterMetadata.Broker] = []
        for i in 0..<Int(md.broker_cnt) {
            let b = md.brokers[i]
            brokers.append(.init(id: b.id, host: String(cString: b.host), port: Int(b.port)))
        }
        var topics: [KafkaTopicMetadata] = []
        for i in 0..<Int(md.topic_cnt) {
            let t = md.topics[i]
            var partitions: [KafkaTopicMetadata.Partition] = []
            for j in 0..<Int(t.partition_cnt) {
                let p = t.partitions[j]
                partitions.append(
                    .init(
                        id: p.id, leader: p.leader,
                        replicas: (0..<Int(p.replica_cnt)).map { p.replicas[$0] },
                        inSyncReplicas: (0..<Int(p.isr_cnt)).map { p.isrs[$0] },
                        error: p.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : RDKafkaErrors.name(p.err.rawValue)))
            }
            topics.append(
                KafkaTopicMetadata(
                    name: String(cString: t.topic), partitions: partitions.sorted { $0.id < $1.id },
                    error: t.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : RDKafkaErrors.name(t.err.rawValue)))
        }
        return KafkaClusterMetadata(
            originatingBrokerID: md.orig_broker_id, brokers: brokers, topics: topics.sorted { $0.name < $1.name })
    }

    /// Low and high watermarks asked of the partition leader (blocking).
    func watermarksBlocking(_ tp: TopicPartition, timeoutMilliseconds: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        var low: Int64 = 0
        var high: Int64 = 0
        let err = rd_kafka_query_watermark_offsets(handle, tp.topic, tp.partition, &low, &high, timeoutMilliseconds)
        try RDKafkaErrors.check(err, context: ["topic": tp.topic, "partition": String(tp.partition)])
        return (low, high)
    }
}

/// Milliseconds for a C timeout argument, clamped to Int32.
func milliseconds(_ duration: Duration) -> Int32 {
    let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    return Int32(clamping: max(0, ms))
}
