import CRdKafka

/// librdkafka driven directly from its C API, with no Swift layer in between: the yardstick that
/// `levee bench kafka` measures the Swift producer and consumer against.
///
/// The loops are what a C program would write: `rd_kafka_produce` + `rd_kafka_poll` with delivery
/// reports counted in a callback, then `rd_kafka_flush`; `rd_kafka_consumer_poll` over an explicit
/// assignment of every partition from the beginning (no group join, so it times fetching only).
/// Both block the calling thread; run them off the cooperative pool.
public enum RawBaseline {
    /// What one run moved and how long it took.
    public struct Measurement: Sendable, Codable {
        public var messages: Int
        /// Payload bytes (keys not counted).
        public var bytes: Int
        public var seconds: Double

        public init(messages: Int, bytes: Int, seconds: Double) {
            self.messages = messages
            self.bytes = bytes
            self.seconds = seconds
        }

        public var messagesPerSecond: Double { seconds > 0 ? Double(messages) / seconds : 0 }
        /// Payload megabytes (10^6 bytes) per second.
        public var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / 1_000_000 / seconds : 0 }
    }

    /// Produces `messages` messages of `size` bytes to `topic` and waits until every one is
    /// acknowledged. Each message's key is its index as 8 big-endian bytes (so keyed
    /// partitioning spreads them over the partitions). Time runs from the first produce call to
    /// the last delivery report.
    public static func produce(bootstrapServers: String, topic: String, messages: Int, size: Int,
                               properties: [String: String] = [:]) throws -> Measurement {
        guard messages >= 1, size >= 0 else {
            throw KafkaError(kind: .configuration, message: "need at least one message and a size of 0 or more bytes",
                             context: ["messages": String(messages), "size": String(size)])
        }
        // Delivery reports run on this thread (inside rd_kafka_poll/flush) and write here; the
        // memory outlives the handle (destroyed first by the defers' reverse order).
        let deliveries = UnsafeMutablePointer<DeliveryCount>.allocate(capacity: 1)
        deliveries.initialize(to: DeliveryCount())
        defer { deliveries.deallocate() }
        let conf = try makeConfiguration(["bootstrap.servers": bootstrapServers].merging(properties) { $1 })
        rd_kafka_conf_set_opaque(conf, deliveries)
        rd_kafka_conf_set_dr_msg_cb(conf, { _, message, opaque in
            guard let message, let opaque else { return }
            let counter = opaque.assumingMemoryBound(to: DeliveryCount.self)
            if message.pointee.err.rawValue == 0 {
                counter.pointee.delivered += 1
            } else {
                counter.pointee.failed += 1
                counter.pointee.firstError = counter.pointee.firstError ?? message.pointee.err.rawValue
            }
        })
        let handle = try makeHandle(RD_KAFKA_PRODUCER, conf)
        defer { rd_kafka_destroy(handle) }
        guard let topicHandle = rd_kafka_topic_new(handle, topic, nil) else {
            throw KafkaError(kind: .configuration, message: "could not create a topic handle", context: ["topic": topic])
        }
        defer { rd_kafka_topic_destroy(topicHandle) }

        let payload = [UInt8](repeating: 0x61, count: size)
        let clock = ContinuousClock()
        let start = clock.now
        try payload.withUnsafeBytes { payloadBytes in
            let payloadPointer = UnsafeMutableRawPointer(mutating: payloadBytes.baseAddress)
            var key = UInt64(0)
            for index in 0..<messages {
                key = UInt64(index).bigEndian
                while true {
                    // RD_KAFKA_MSG_F_COPY (2): librdkafka copies payload and key.
                    let status = withUnsafeMutableBytes(of: &key) { keyBytes in
                        rd_kafka_produce(topicHandle, -1, 2, payloadPointer, size, keyBytes.baseAddress, keyBytes.count, nil)
                    }
                    if status == 0 { break }
                    let error = rd_kafka_last_error()
                    guard error == RD_KAFKA_RESP_ERR__QUEUE_FULL else {
                        throw KafkaError(kind: .other, code: error.rawValue, codeName: String(cString: rd_kafka_err2name(error)),
                                         message: "produce failed: " + String(cString: rd_kafka_err2str(error)),
                                         context: ["topic": topic, "message": String(index)])
                    }
                    rd_kafka_poll(handle, 10)  // the local queue is full: serve delivery reports, then retry
                }
                rd_kafka_poll(handle, 0)
            }
        }
        let flushed = rd_kafka_flush(handle, 120_000)
        let seconds = (clock.now - start).seconds
        let counts = deliveries.pointee
        guard flushed == RD_KAFKA_RESP_ERR_NO_ERROR, counts.failed == 0, counts.delivered == messages else {
            let code = counts.firstError ?? flushed.rawValue
            throw KafkaError(kind: .other, code: code, codeName: ErrorCodeTable.name(of: code),
                             message: "not every message was delivered: \(counts.delivered) delivered, \(counts.failed) failed",
                             context: ["topic": topic, "messages": String(messages)])
        }
        return Measurement(messages: messages, bytes: messages * size, seconds: seconds)
    }

    /// Consumes `messages` messages from partitions `0..<partitions` of `topic`, starting at the
    /// beginning of each, with `rd_kafka_consumer_poll`. Time runs from the assignment to the last
    /// message. Throws if fewer arrive within `timeoutSeconds`.
    public static func consume(bootstrapServers: String, topic: String, partitions: Int, messages: Int,
                               properties: [String: String] = [:], timeoutSeconds: Double = 120) throws -> Measurement {
        var settings = [
            "bootstrap.servers": bootstrapServers,
            "group.id": "levee-raw-baseline-\(UInt64.random(in: 0...UInt64.max))",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
        ]
        settings.merge(properties) { $1 }
        let handle = try makeHandle(RD_KAFKA_CONSUMER, try makeConfiguration(settings))
        defer {
            rd_kafka_consumer_close(handle)
            rd_kafka_destroy(handle)
        }
        rd_kafka_poll_set_consumer(handle)
        guard let list = rd_kafka_topic_partition_list_new(Int32(clamping: partitions)) else {
            throw KafkaError(kind: .other, message: "could not allocate a partition list")
        }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for partition in 0..<partitions {
            // RD_KAFKA_OFFSET_BEGINNING is -2.
            rd_kafka_topic_partition_list_add(list, topic, Int32(partition)).pointee.offset = -2
        }

        let clock = ContinuousClock()
        let start = clock.now
        let assigned = rd_kafka_assign(handle, list)
        guard assigned == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(kind: .other, code: assigned.rawValue, codeName: String(cString: rd_kafka_err2name(assigned)),
                             message: "assign failed: " + String(cString: rd_kafka_err2str(assigned)), context: ["topic": topic])
        }
        let deadline = start.advanced(by: .milliseconds(Int64(timeoutSeconds * 1000)))
        var received = 0
        var bytes = 0
        var lastError: (Int32, String)?
        var finished = start
        while received < messages, clock.now < deadline {
            guard let message = rd_kafka_consumer_poll(handle, 100) else { continue }
            let error = message.pointee.err
            if error == RD_KAFKA_RESP_ERR_NO_ERROR {
                received += 1
                bytes += message.pointee.len
                finished = clock.now
            } else if error != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                lastError = (error.rawValue, String(cString: rd_kafka_err2str(error)))
            }
            rd_kafka_message_destroy(message)
        }
        guard received >= messages else {
            throw KafkaError(kind: .timeout, code: lastError?.0, codeName: lastError.map { ErrorCodeTable.name(of: $0.0) },
                             message: "consumed \(received) of \(messages) messages in \(timeoutSeconds) s"
                                 + (lastError.map { "; last error: \($0.1)" } ?? ""),
                             context: ["topic": topic])
        }
        return Measurement(messages: received, bytes: bytes, seconds: (finished - start).seconds)
    }

    private struct DeliveryCount {
        var delivered = 0
        var failed = 0
        var firstError: Int32?
    }

    private static func makeConfiguration(_ properties: [String: String]) throws -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else { throw KafkaError(kind: .other, message: "could not allocate a configuration") }
        var errorText = [CChar](repeating: 0, count: 512)
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            guard rd_kafka_conf_set(conf, name, value, &errorText, errorText.count) == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                throw KafkaError(kind: .configuration, message: text(errorText), context: ["property": name, "value": value])
            }
        }
        return conf
    }

    /// Creates the handle; librdkafka owns `conf` from here on success, we destroy it on failure.
    private static func makeHandle(_ type: rd_kafka_type_t, _ conf: OpaquePointer) throws -> OpaquePointer {
        var errorText = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(type, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(kind: .configuration, message: "could not create a client: " + text(errorText))
        }
        return handle
    }

    private static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    fileprivate var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
