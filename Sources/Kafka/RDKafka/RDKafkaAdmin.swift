import CRdKafka

/// Admin operations near C: each builds its request objects, waits on a private result queue
/// (blocking; called on the client's blocking thread) and destroys everything it created once.
final class RDKafkaAdmin: Sendable {
    let client: RDKafkaClient
    let logHandler: KafkaLogHandler?

    init(properties: [String: String], logHandler: KafkaLogHandler?) throws(KafkaError) {
        client = try RDKafkaClient(type: .producer, properties: properties, events: 0)
        self.logHandler = logHandler
        let client = self.client
        client.startPolling(handle: { event in
            switch rd_kafka_event_type(event) {
            case RD_KAFKA_EVENT_LOG:
                if let logHandler, let line = RDKafkaClient.logMessage(of: event) { logHandler(line) }
            case RD_KAFKA_EVENT_ERROR:
                logHandler?(KafkaLogMessage(level: 4, facility: "ERROR", message: client.errorOf(event: event).description))
            default:
                break
            }
        })
    }

    private func options(_ op: rd_kafka_admin_op_t, timeoutMilliseconds: Int32) throws(KafkaError) -> OpaquePointer {
        guard let options = rd_kafka_AdminOptions_new(client.handle, op) else {
            throw KafkaError(kind: .other, message: "rd_kafka_AdminOptions_new failed")
        }
        var text = [CChar](repeating: 0, count: 512)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMilliseconds, &text, text.count)
        if op == RD_KAFKA_ADMIN_OP_CREATETOPICS {
            _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMilliseconds, &text, text.count)
        }
        return options
    }

    /// Waits for the admin result event on `queue`; the caller destroys the returned event.
    private func awaitResult(_ queue: OpaquePointer, timeoutMilliseconds: Int32, operation: String) throws(KafkaError) -> OpaquePointer {
        // The request timeout bounds the operation; the extra second lets its own timeout error arrive first.
        guard let event = rd_kafka_queue_poll(queue, timeoutMilliseconds + 1000) else {
            throw KafkaError(kind: .timeout, message: "\(operation) did not complete in time", context: ["operation": operation])
        }
        let err = rd_kafka_event_error(event)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) }
            rd_kafka_event_destroy(event)
            throw RDKafkaErrors.error(code: err, message: text, context: ["operation": operation])
        }
        return event
    }

    func createTopicsBlocking(_ topics: [NewTopic], timeoutMilliseconds: Int32) throws(KafkaError) -> [String: TopicCreation] {
        var handles: [OpaquePointer?] = []
        defer { for handle in handles { rd_kafka_NewTopic_destroy(handle) } }
        var text = [CChar](repeating: 0, count: 512)
        for topic in topics {
            guard let handle = rd_kafka_NewTopic_new(topic.name, topic.partitions, Int32(topic.replicationFactor), &text, text.count) else {
                throw KafkaError(kind: .configuration, message: cBufferText(text), context: ["topic": topic.name])
            }
            handles.append(handle)
            for (name, value) in topic.configs.sorted(by: { $0.key < $1.key }) {
                let err = rd_kafka_NewTopic_set_config(handle, name, value)
                try RDKafkaErrors.check(err, context: ["topic": topic.name, "config": name])
            }
        }
        let options = try options(RD_KAFKA_ADMIN_OP_CREATETOPICS, timeoutMilliseconds: timeoutMilliseconds)
        defer { rd_kafka_AdminOptions_destroy(options) }
        let queue = rd_kafka_queue_new(client.handle)!
        defer { rd_kafka_queue_destroy(queue) }
        handles.withUnsafeMutableBufferPointer { buffer in
            rd_kafka_CreateTopics(client.handle, buffer.baseAddress, buffer.count, options, queue)
        }
        let event = try awaitResult(queue, timeoutMilliseconds: timeoutMilliseconds, operation: "CreateTopics")
        defer { rd_kafka_event_destroy(event) }
        guard let result = rd_kafka_event_CreateTopics_result(event) else {
            throw KafkaError(kind: .other, message: "unexpected admin result event", context: ["operation": "CreateTopics"])
        }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count) else { return [:] }
        var outcome: [String: TopicCreation] = [:]
        var firstFailure: KafkaError?
        for i in 0..<count {
            let item = results[i]
            let name = String(cString: rd_kafka_topic_result_name(item))
            let err = rd_kafka_topic_result_error(item)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                outcome[name] = .created
            } else if err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS {
                outcome[name] = .alreadyExisted
            } else if firstFailure == nil {
                let text = rd_kafka_topic_result_error_string(item).map { String(cString: $0) }
                firstFailure = RDKafkaErrors.error(code: err, message: text, context: ["topic": name, "operation": "CreateTopics"])
            }
        }
        if let firstFailure { throw firstFailure }
        return outcome
    }

    func describeTopicConfigBlocking(_ name: String, timeoutMilliseconds: Int32) throws(KafkaError) -> [String: TopicConfigEntry] {
        var resources: [OpaquePointer?] = [rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name)]
        defer { rd_kafka_ConfigResource_destroy(resources[0]) }
        let options = try options(RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeoutMilliseconds: timeoutMilliseconds)
        defer { rd_kafka_AdminOptions_destroy(options) }
        let queue = rd_kafka_queue_new(client.handle)!
        defer { rd_kafka_queue_destroy(queue) }
        resources.withUnsafeMutableBufferPointer { buffer in
            rd_kafka_DescribeConfigs(client.handle, buffer.baseAddress, buffer.count, options, queue)
        }
        let event = try awaitResult(queue, timeoutMilliseconds: timeoutMilliseconds, operation: "DescribeConfigs")
        defer { rd_kafka_event_destroy(event) }
        guard let result = rd_kafka_event_DescribeConfigs_result(event) else {
            throw KafkaError(kind: .other, message: "unexpected admin result event", context: ["operation": "DescribeConfigs"])
        }
        var count = 0
        guard let described = rd_kafka_DescribeConfigs_result_resources(result, &count), count > 0 else {
            throw KafkaError(kind: .unknownTopicOrPartition, message: "no configuration returned", context: ["topic": name])
        }
        let resource = described[0]
        let err = rd_kafka_ConfigResource_error(resource)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_ConfigResource_error_string(resource).map { String(cString: $0) }
            throw RDKafkaErrors.error(code: err, message: text, context: ["topic": name, "operation": "DescribeConfigs"])
        }
        var entryCount = 0
        var entries: [String: TopicConfigEntry] = [:]
        if let configs = rd_kafka_ConfigResource_configs(resource, &entryCount) {
            for i in 0..<entryCount {
                let entry = configs[i]
                let key = String(cString: rd_kafka_ConfigEntry_name(entry))
                entries[key] = TopicConfigEntry(
                    name: key, value: rd_kafka_ConfigEntry_value(entry).map { String(cString: $0) },
                    isDefault: rd_kafka_ConfigEntry_is_default(entry) != 0,
                    isReadOnly: rd_kafka_ConfigEntry_is_read_only(entry) != 0,
                    isSensitive: rd_kafka_ConfigEntry_is_sensitive(entry) != 0)
            }
        }
        return entries
    }
}
