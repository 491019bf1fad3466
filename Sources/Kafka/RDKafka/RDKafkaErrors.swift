import CRdKafka

/// Maps librdkafka's error codes and `rd_kafka_error_t` objects to ``KafkaError``.
enum RDKafkaErrors {
    /// The recovery class of a plain `rd_kafka_resp_err_t` (no error object to ask).
    static func kind(forCode code: Int32) -> KafkaError.Kind {
        let err = rd_kafka_resp_err_t(rawValue: code)
        switch err {
        case RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
            return .timeout
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
            RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
            return .unknownTopicOrPartition
        case RD_KAFKA_RESP_ERR__FENCED, RD_KAFKA_RESP_ERR_PRODUCER_FENCED, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH,
            RD_KAFKA_RESP_ERR__FATAL, RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT, RD_KAFKA_RESP_ERR__INCONSISTENT:
            return .fatal
        case RD_KAFKA_RESP_ERR__INVALID_ARG, RD_KAFKA_RESP_ERR_INVALID_CONFIG, RD_KAFKA_RESP_ERR__UNKNOWN_GROUP,
            RD_KAFKA_RESP_ERR__NOT_CONFIGURED, RD_KAFKA_RESP_ERR_INVALID_PARTITIONS,
            RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
            return .configuration
        case RD_KAFKA_RESP_ERR__STATE, RD_KAFKA_RESP_ERR__DESTROY, RD_KAFKA_RESP_ERR__PREV_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
            return .state
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__QUEUE_FULL,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            RD_KAFKA_RESP_ERR__RESOLVE, RD_KAFKA_RESP_ERR__WAIT_COORD, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
            RD_KAFKA_RESP_ERR_FETCH_SESSION_ID_NOT_FOUND, RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
            return .retriable
        default:
            return .other
        }
    }

    /// The recovery class of an `rd_kafka_error_t`, from its flags first, its code second.
    /// Fatal beats abortable beats retriable, as librdkafka's transaction docs prescribe.
    static func kind(code: Int32, isFatal: Bool, requiresAbort: Bool, isRetriable: Bool) -> KafkaError.Kind {
        if isFatal { return .fatal }
        if requiresAbort { return .transactionAbortable }
        if isRetriable { return .retriable }
        return kind(forCode: code)
    }

    static func name(_ code: Int32) -> String {
        String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }

    static func text(_ code: Int32) -> String {
        String(cString: rd_kafka_err2str(rd_kafka_resp_err_t(rawValue: code)))
    }

    /// A ``KafkaError`` for a response code, with librdkafka's name and text (or `message`).
    static func error(code: rd_kafka_resp_err_t, message: String? = nil, context: [String: String] = [:])
        -> KafkaError
    {
        error(code: code.rawValue, message: message, context: context)
    }

    static func error(code: Int32, message: String? = nil, context: [String: String] = [:]) -> KafkaError {
        KafkaError(
            kind: kind(forCode: code), code: code, codeName: name(code),
            message: (message?.isEmpty == false ? message! : text(code)), context: context)
    }

    /// Converts an `rd_kafka_error_t` into a ``KafkaError`` and destroys it: every error object
    /// passes through here exactly once. Returns `nil` for a null pointer (success).
    static func consume(_ error: OpaquePointer?, context: [String: String] = [:]) -> KafkaError? {
        guard let error else { return nil }
        defer { rd_kafka_error_destroy(error) }
        let code = rd_kafka_error_code(error).rawValue
        let kind = kind(
            code: code, isFatal: rd_kafka_error_is_fatal(error) != 0,
            requiresAbort: rd_kafka_error_txn_requires_abort(error) != 0,
            isRetriable: rd_kafka_error_is_retriable(error) != 0)
        let text = rd_kafka_error_string(error).map { String(cString: $0) } ?? RDKafkaErrors.text(code)
        return KafkaError(kind: kind, code: code, codeName: name(code), message: text, context: context)
    }

    /// Throws the consumed error, if any.
    static func check(_ error: OpaquePointer?, context: [String: String] = [:]) throws(KafkaError) {
        if let failure = consume(error, context: context) { throw failure }
    }

    /// Throws for a non-zero response code.
    static func check(_ code: rd_kafka_resp_err_t, context: [String: String] = [:]) throws(KafkaError) {
        if code != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaErrors.error(code: code, context: context) }
    }
}

extension KafkaError {
    /// A ``KafkaError`` for a librdkafka response code (`rd_kafka_resp_err_t`), classified into a
    /// ``Kind`` and carrying librdkafka's name and text for the code.
    public static func fromLibrdkafka(code: Int32, message: String? = nil, context: [String: String] = [:])
        -> KafkaError
    {
        RDKafkaErrors.error(code: code, message: message, context: context)
    }

    /// The recovery class of an error object with these flags (see `rd_kafka_error_is_fatal`,
    /// `rd_kafka_error_txn_requires_abort`, `rd_kafka_error_is_retriable`).
    public static func classify(code: Int32, isFatal: Bool, requiresAbort: Bool, isRetriable: Bool) -> Kind {
        RDKafkaErrors.kind(code: code, isFatal: isFatal, requiresAbort: requiresAbort, isRetriable: isRetriable)
    }
}
