import CRdKafka
import Foundation
import Synchronization

/// The consumer side near C. Its poll thread serves the consumer queue: it copies each fetched
/// record into the bounded ``ConsumerEventBuffer``, answers rebalances (eager or cooperative), and
/// pauses every assigned partition while the buffer is full (still serving the queue, so the
/// group session stays alive), resuming once the reader has drained it to half.
final class RDKafkaConsumer: Sendable {
    struct PauseState {
        var userPaused: Set<TopicPartition> = []
        var backpressurePaused = false
        /// The current assignment, tracked here so the poll thread never has to ask librdkafka
        /// (`rd_kafka_assignment` waits on librdkafka's main thread).
        var assigned: Set<TopicPartition> = []
        /// Next offset per partition after the last record handed to the buffer (poll thread).
        var nextOffsets: [TopicPartition: Int64] = [:]
        /// Seeks waiting for the poll thread.
        var seeks: [(offsets: [TopicPartitionOffset], done: CheckedContinuation<KafkaError?, Never>)] = []
        var stopped = false
    }

    let client: RDKafkaClient
    let buffer: ConsumerEventBuffer
    let logHandler: KafkaLogHandler?
    let onRevoke: (@Sendable (PartitionRevocation) -> Void)?
    let groupID: String
    /// Guards pause/resume decisions and the (non-blocking) C calls that apply them, so that user
    /// pauses and back-pressure pauses never undo each other.
    let pauses = Mutex(PauseState())

    init(
        properties: [String: String], groupID: String, bufferCapacity: Int, logHandler: KafkaLogHandler?,
        onRevoke: (@Sendable (PartitionRevocation) -> Void)?
    ) throws(KafkaError) {
        client = try RDKafkaClient(
            type: .consumer, properties: properties,
            events: RD_KAFKA_EVENT_FETCH | RD_KAFKA_EVENT_REBALANCE | RD_KAFKA_EVENT_OFFSET_COMMIT)
        self.groupID = groupID
        self.logHandler = logHandler
        self.onRevoke = onRevoke
        let client = self.client
        buffer = ConsumerEventBuffer(capacity: bufferCapacity, onDrained: { client.wake() })
        client.startPolling(
            handle: { [self] event in handle(event) },
            idle: { [self] in applyBackpressure() },
            shutdown: { [self] _ in closeOnPollThread() })
    }

    // MARK: poll thread

    private func handle(_ event: OpaquePointer) {
        switch rd_kafka_event_type(event) {
        case RD_KAFKA_EVENT_FETCH:
            while let message = rd_kafka_event_message_next(event) {
                fetched(message)
            }
        case RD_KAFKA_EVENT_REBALANCE:
            rebalance(event)
        case RD_KAFKA_EVENT_ERROR:
            let code = rd_kafka_event_error(event)
            if code == RD_KAFKA_RESP_ERR__PARTITION_EOF, let tp = rd_kafka_event_topic_partition(event) {
                let end = TopicPartitionOffset(String(cString: tp.pointee.topic), tp.pointee.partition, offset: tp.pointee.offset)
                rd_kafka_topic_partition_destroy(tp)
                buffer.push(.partitionEnd(end))
                return
            }
            let error = client.errorOf(event: event)
            if error.kind == .fatal {
                buffer.finish(error: error)
            } else {
                buffer.push(.error(error))
            }
        case RD_KAFKA_EVENT_OFFSET_COMMIT:
            let code = rd_kafka_event_error(event)
            if code != RD_KAFKA_RESP_ERR_NO_ERROR, code != RD_KAFKA_RESP_ERR__NO_OFFSET {
                var error = RDKafkaErrors.error(code: code, context: ["operation": "commit (async)", "group": groupID])
                if let list = rd_kafka_event_topic_partition_list(event), let partitionError = RDKafkaTopicPartitionList.firstError(of: list) {
                    error.context.merge(partitionError.context) { a, _ in a }
                }
                buffer.push(.error(error))
            }
        case RD_KAFKA_EVENT_LOG:
            if let logHandler, let line = RDKafkaClient.logMessage(of: event) { logHandler(line) }
        default:
            // An event type we did not enable: nothing to do, and never a crash.
            logHandler?(KafkaLogMessage(level: 7, facility: "EVENT", message: "ignored event type \(rd_kafka_event_type(event))"))
        }
    }

    private func fetched(_ pointer: UnsafePointer<rd_kafka_message_t>) {
        let m = pointer.pointee
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
                buffer.push(.partitionEnd(TopicPartitionOffset(topic, m.partition, offset: m.offset)))
            } else {
                let text = m.payload.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: m.len), as: UTF8.self) }
                buffer.push(.error(RDKafkaErrors.error(code: m.err, message: text, context: ["topic": topic, "partition": String(m.partition)])))
            }
            return
        }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(pointer, &timestampType)
        var headers: [KafkaHeader] = []
        var cHeaders: OpaquePointer?
        if rd_kafka_message_headers(pointer, &cHeaders) == RD_KAFKA_RESP_ERR_NO_ERROR, let cHeaders {
            var index = 0
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(cHeaders, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(KafkaHeader(name.map { String(cString: $0) } ?? "", value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
                index += 1
            }
        }
        let tp = TopicPartition(topic, m.partition)
        pauses.withLock { $0.nextOffsets[tp] = m.offset + 1 }
        buffer.push(
            .message(
                KafkaMessage(
                    topic: topic, partition: m.partition, offset: m.offset,
                    key: m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) },
                    value: m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) },
                    headers: headers,
                    timestampMilliseconds: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp)))
    }

    var isCooperative: Bool {
        guard let name = rd_kafka_rebalance_protocol(client.handle) else { return false }
        return String(cString: name) == "COOPERATIVE"
    }

    private func rebalance(_ event: OpaquePointer) {
        let code = rd_kafka_event_error(event)
        let list = rd_kafka_event_topic_partition_list(event)  // owned by the event
        let partitions = RDKafkaTopicPartitionList.offsets(of: list).map(\.topicPartition)
        let cooperative = isCooperative
        let context = ["group": groupID, "operation": "rebalance"]
        switch code {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            if cooperative {
                if let error = RDKafkaErrors.consume(rd_kafka_incremental_assign(client.handle, list), context: context) {
                    buffer.push(.error(error))
                }
            } else {
                let err = rd_kafka_assign(client.handle, list)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { buffer.push(.error(RDKafkaErrors.error(code: err, context: context))) }
            }
            // Newly assigned partitions start fetching: keep them paused if they should be.
            pauses.withLock { p in
                if cooperative { p.assigned.formUnion(partitions) } else { p.assigned = Set(partitions) }
                // A new assignment starts at the committed offset: where an earlier assignment of the
                // same partition stopped reading is stale, and a back-pressure pause that seeked there
                // skipped the records in between (found by `levee chaos`: workers stopped receiving).
                for tp in partitions { p.nextOffsets[tp] = nil }
                let toPause = p.backpressurePaused ? partitions : partitions.filter { p.userPaused.contains($0) }
                if !toPause.isEmpty {
                    _ = RDKafkaTopicPartitionList(toPause).withPointer { rd_kafka_pause_partitions(client.handle, $0) }
                }
                // librdkafka keeps a partition's pause flag across unassign and assign: one that a
                // back-pressure pause held when it was revoked (its resume then skipped it, being
                // unassigned) came back paused and was never fetched again (found by `levee chaos`:
                // workers held partitions and received nothing). Resume what should run.
                let toResume = partitions.filter { !toPause.contains($0) }
                if !toResume.isEmpty {
                    _ = RDKafkaTopicPartitionList(toResume).withPointer { rd_kafka_resume_partitions(client.handle, $0) }
                }
            }
            buffer.push(.partitionsAssigned(partitions))
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            let lost = rd_kafka_assignment_lost(client.handle) != 0
            onRevoke?(PartitionRevocation(partitions: partitions, lost: lost, core: self))
            buffer.discardMessages(of: Set(partitions))
            if cooperative {
                if let error = RDKafkaErrors.consume(rd_kafka_incremental_unassign(client.handle, list), context: context) {
                    buffer.push(.error(error))
                }
                pauses.withLock { $0.assigned.subtract(partitions) }
            } else {
                _ = rd_kafka_assign(client.handle, nil)
                pauses.withLock { $0.assigned = [] }
            }
            buffer.push(.partitionsRevoked(partitions, lost: lost))
        default:
            // A failed rebalance: drop the assignment, as librdkafka's docs prescribe.
            _ = rd_kafka_assign(client.handle, nil)
            pauses.withLock { $0.assigned = [] }
            buffer.push(.error(RDKafkaErrors.error(code: code, context: context)))
        }
    }

    private func applyBackpressure() {
        runSeeks()
        // Give a reader that keeps up a moment to take records before pausing (see waitForRoom).
        _ = buffer.waitForRoom(timeout: .milliseconds(50))
        let action = buffer.backpressureAction()
        guard action != .none else { return }
        pauses.withLock { p in
            if action == .pause {
                // Stop fetching; what librdkafka already fetched still arrives (see FlowPolicy).
                p.backpressurePaused = true
                let partitions = Array(p.assigned)
                guard !partitions.isEmpty else { return }
                _ = RDKafkaTopicPartitionList(partitions).withPointer { rd_kafka_pause_partitions(client.handle, $0) }
                logHandler?(KafkaLogMessage(level: 7, facility: "BACKPRESSURE", message: "pause \(partitions)"))
            } else if action == .pauseAndDrop {
                p.backpressurePaused = true
                let partitions = Array(p.assigned)
                guard !partitions.isEmpty else { return }
                _ = RDKafkaTopicPartitionList(partitions).withPointer { rd_kafka_pause_partitions(client.handle, $0) }
                // Pausing stops fetching but not the delivery of records librdkafka already
                // prefetched. Seeking to the next offset we have not taken makes those records
                // outdated (librdkafka drops them) and refetches them after the resume, so the
                // buffer stays within its capacity.
                let positions = partitions.compactMap { tp in p.nextOffsets[tp].map { TopicPartitionOffset(tp, offset: $0) } }
                logHandler?(KafkaLogMessage(level: 7, facility: "BACKPRESSURE", message: "pause \(partitions) seek \(positions)"))
                if !positions.isEmpty {
                    let list = RDKafkaTopicPartitionList(positions)
                    if let error = RDKafkaErrors.consume(list.withPointer { rd_kafka_seek_partitions(client.handle, $0, 0) }) {
                        logHandler?(KafkaLogMessage(level: 4, facility: "BACKPRESSURE", message: "seek on pause failed: \(error)"))
                    }
                }
            } else {
                p.backpressurePaused = false
                let partitions = p.assigned.filter { !p.userPaused.contains($0) }
                logHandler?(KafkaLogMessage(level: 7, facility: "BACKPRESSURE", message: "resume \(partitions)"))
                guard !partitions.isEmpty else { return }
                _ = RDKafkaTopicPartitionList(Array(partitions)).withPointer { rd_kafka_resume_partitions(client.handle, $0) }
            }
        }
    }

    /// Runs queued seeks on the poll thread: the seek makes already-fetched records outdated,
    /// and because only this thread takes records from librdkafka, none from before the seek can
    /// reach the buffer after the buffer was cleared of that partition.
    private func runSeeks() {
        let seeks = pauses.withLock { p in
            defer { p.seeks.removeAll() }
            return p.seeks
        }
        for seek in seeks {
            let list = RDKafkaTopicPartitionList(seek.offsets)
            var failure = RDKafkaErrors.consume(list.withPointer { rd_kafka_seek_partitions(client.handle, $0, 0) }, context: ["operation": "seek"])
            // With no timeout the seek is asynchronous and each partition reports _IN_PROGRESS.
            if failure == nil, let error = list.firstError, error.code != RD_KAFKA_RESP_ERR__IN_PROGRESS.rawValue { failure = error }
            if failure == nil {
                buffer.discardMessages(of: Set(seek.offsets.map(\.topicPartition)))
                pauses.withLock { p in
                    for item in seek.offsets where item.offset >= 0 { p.nextOffsets[item.topicPartition] = item.offset }
                }
            }
            seek.done.resume(returning: failure)
        }
    }

    private func closeOnPollThread() {
        // Leave the group cleanly: librdkafka posts the final revoke to our queue, which we keep
        // serving until it says the consumer is closed (bounded, so a dead cluster cannot hang us).
        if let error = RDKafkaErrors.consume(rd_kafka_consumer_close_queue(client.handle, client.queue)) {
            logHandler?(KafkaLogMessage(level: 4, facility: "CLOSE", message: error.description))
        }
        let deadline = Date().addingTimeInterval(15)
        while rd_kafka_consumer_closed(client.handle) == 0, Date() < deadline {
            if let event = rd_kafka_queue_poll(client.queue, 100) {
                handle(event)
                rd_kafka_event_destroy(event)
            }
        }
        let seeks = pauses.withLock { p in
            p.stopped = true
            defer { p.seeks.removeAll() }
            return p.seeks
        }
        for seek in seeks { seek.done.resume(returning: KafkaError(kind: .state, message: "the consumer is closed", context: ["operation": "seek"])) }
        buffer.finish()
    }

    // MARK: calls from the API (thread-safe in librdkafka)

    func currentAssignmentList() -> RDKafkaTopicPartitionList? {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        guard rd_kafka_assignment(client.handle, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return nil }
        return RDKafkaTopicPartitionList(owning: list)
    }

    func assignment() throws(KafkaError) -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        try RDKafkaErrors.check(rd_kafka_assignment(client.handle, &list), context: ["operation": "assignment"])
        guard let list else { return [] }
        return RDKafkaTopicPartitionList(owning: list).offsets.map(\.topicPartition)
    }

    func subscribe(_ topics: [String]) throws(KafkaError) {
        let list = RDKafkaTopicPartitionList(topics.map { TopicPartition($0, -1) })
        try RDKafkaErrors.check(list.withPointer { rd_kafka_subscribe(client.handle, $0) }, context: ["operation": "subscribe", "topics": topics.joined(separator: ",")])
    }

    func assign(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        try pauses.withLock { (p: inout PauseState) throws(KafkaError) in
            let list = RDKafkaTopicPartitionList(offsets)
            try RDKafkaErrors.check(list.withPointer { rd_kafka_assign(client.handle, $0) }, context: ["operation": "assign"])
            p.assigned = Set(offsets.map(\.topicPartition))
            for tp in p.assigned { p.nextOffsets[tp] = nil }
            let toPause = p.backpressurePaused ? Array(p.assigned) : Array(p.assigned.intersection(p.userPaused))
            if !toPause.isEmpty { _ = RDKafkaTopicPartitionList(toPause).withPointer { rd_kafka_pause_partitions(client.handle, $0) } }
            // The pause flag outlives an assignment in librdkafka (see the rebalance handler).
            let toResume = Array(p.assigned.subtracting(toPause))
            if !toResume.isEmpty { _ = RDKafkaTopicPartitionList(toResume).withPointer { rd_kafka_resume_partitions(client.handle, $0) } }
        }
    }

    func store(_ offsets: [TopicPartitionOffset]) throws(KafkaError) {
        let list = RDKafkaTopicPartitionList(offsets)
        try RDKafkaErrors.check(list.withPointer { rd_kafka_offsets_store(client.handle, $0) }, context: ["operation": "offsets_store"])
        if let error = list.firstError { throw error }
    }

    func commitBlocking(_ offsets: [TopicPartitionOffset]?) throws(KafkaError) {
        let list = offsets.map { RDKafkaTopicPartitionList($0) }
        let err = withExtendedLifetime(list) { rd_kafka_commit(client.handle, list?.pointer, 0) }
        if err == RD_KAFKA_RESP_ERR__NO_OFFSET { return }  // nothing to commit
        try RDKafkaErrors.check(err, context: ["operation": "commit", "group": groupID])
        if let error = list?.firstError { throw error }
    }

    func commitAsync(_ offsets: [TopicPartitionOffset]?) throws(KafkaError) {
        let list = offsets.map { RDKafkaTopicPartitionList($0) }
        let err = withExtendedLifetime(list) { rd_kafka_commit(client.handle, list?.pointer, 1) }
        if err == RD_KAFKA_RESP_ERR__NO_OFFSET { return }
        try RDKafkaErrors.check(err, context: ["operation": "commit (async)", "group": groupID])
    }

    func pause(_ partitions: [TopicPartition]) throws(KafkaError) {
        try pauses.withLock { (p: inout PauseState) throws(KafkaError) in
            p.userPaused.formUnion(partitions)
            let list = RDKafkaTopicPartitionList(partitions)
            try RDKafkaErrors.check(list.withPointer { rd_kafka_pause_partitions(client.handle, $0) }, context: ["operation": "pause"])
        }
    }

    func resume(_ partitions: [TopicPartition]) throws(KafkaError) {
        try pauses.withLock { (p: inout PauseState) throws(KafkaError) in
            p.userPaused.subtract(partitions)
            // While the buffer is full, back-pressure keeps them paused; they resume with it.
            guard !p.backpressurePaused else { return }
            let list = RDKafkaTopicPartitionList(partitions)
            try RDKafkaErrors.check(list.withPointer { rd_kafka_resume_partitions(client.handle, $0) }, context: ["operation": "resume"])
        }
    }

    /// Seeks on the poll thread (see `runSeeks`) and waits until it was applied.
    func seek(_ offsets: [TopicPartitionOffset]) async throws(KafkaError) {
        let failure: KafkaError? = await withCheckedContinuation { continuation in
            let closed = pauses.withLock { p in
                if p.stopped { return true }
                p.seeks.append((offsets, continuation))
                return false
            }
            if closed {
                continuation.resume(returning: KafkaError(kind: .state, message: "the consumer is closed", context: ["operation": "seek"]))
            } else {
                client.wake()
            }
        }
        if let failure { throw failure }
    }

    func committedBlocking(_ partitions: [TopicPartition], timeoutMilliseconds: Int32) throws(KafkaError) -> [TopicPartitionOffset] {
        let list = RDKafkaTopicPartitionList(partitions)
        try RDKafkaErrors.check(list.withPointer { rd_kafka_committed(client.handle, $0, timeoutMilliseconds) }, context: ["operation": "committed", "group": groupID])
        if let error = list.firstError { throw error }
        return list.offsets
    }

    func positions(_ partitions: [TopicPartition]) throws(KafkaError) -> [TopicPartitionOffset] {
        let list = RDKafkaTopicPartitionList(partitions)
        try RDKafkaErrors.check(list.withPointer { rd_kafka_position(client.handle, $0) }, context: ["operation": "position"])
        return list.offsets
    }

    func offsetsForTimesBlocking(_ query: [TopicPartitionOffset], timeoutMilliseconds: Int32) throws(KafkaError) -> [TopicPartitionOffset] {
        let list = RDKafkaTopicPartitionList(query)
        try RDKafkaErrors.check(list.withPointer { rd_kafka_offsets_for_times(client.handle, $0, timeoutMilliseconds) }, context: ["operation": "offsets_for_times"])
        if let error = list.firstError { throw error }
        return list.offsets
    }

    func groupMetadata() throws(KafkaError) -> ConsumerGroupMetadata {
        guard let pointer = rd_kafka_consumer_group_metadata(client.handle) else {
            throw KafkaError(kind: .state, message: "the consumer has no group metadata (no group.id?)", context: ["group": groupID])
        }
        return ConsumerGroupMetadata(owning: pointer, groupID: groupID)
    }

    var memberID: String? {
        guard let id = rd_kafka_memberid(client.handle) else { return nil }
        defer { rd_kafka_mem_free(client.handle, id) }
        let text = String(cString: id)
        return text.isEmpty ? nil : text
    }

    var rebalanceProtocol: String? {
        rd_kafka_rebalance_protocol(client.handle).map { String(cString: $0) }
    }
}
