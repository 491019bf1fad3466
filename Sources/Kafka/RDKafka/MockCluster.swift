import CRdKafka
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns one `rd_kafka_t` and the librdkafka mock cluster hosted on it. Both are created in `init`
/// and destroyed exactly once in `deinit`, cluster first (it runs on the handle's threads).
///
/// `@unchecked Sendable`: the two pointers never change after `init`, and every mock call used
/// here is thread-safe in librdkafka (each either takes the cluster's own lock or posts an op to
/// the cluster's thread and waits for its reply).
final class MockCluster: @unchecked Sendable {
    private let handle: OpaquePointer
    private let cluster: OpaquePointer
    let bootstrapServers: String
    let brokerCount: Int

    init(brokers: Int) throws {
        guard brokers >= 1 else {
            throw KafkaError(kind: .configuration, message: "an embedded cluster needs at least one broker",
                             context: ["brokers": String(brokers)])
        }
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(kind: .mockCluster, message: "librdkafka could not allocate a configuration")
        }
        // The handle only hosts the cluster; it never talks to a broker. Keep its own logging quiet
        // (warnings and worse still reach stderr).
        var errorText = [CChar](repeating: 0, count: 512)
        _ = rd_kafka_conf_set(conf, "log_level", "4", &errorText, errorText.count)
        _ = rd_kafka_conf_set(conf, "client.id", "levee-embedded-cluster", &errorText, errorText.count)
        // rd_kafka_new takes ownership of conf on success only.
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(kind: .mockCluster, message: "could not create the cluster's host handle: " + String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        guard let cluster = rd_kafka_mock_cluster_new(handle, Int32(clamping: brokers)) else {
            rd_kafka_destroy(handle)
            throw KafkaError(kind: .mockCluster, message: "librdkafka could not start a mock cluster",
                             context: ["brokers": String(brokers)])
        }
        self.handle = handle
        self.cluster = cluster
        self.brokerCount = brokers
        self.bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(handle)
    }

    /// The calls below return librdkafka's error code (0 = no error); `EmbeddedCluster` turns
    /// non-zero codes into `KafkaError`s with context.

    func createTopic(_ name: String, partitions: Int32, replicationFactor: Int32) -> Int32 {
        rd_kafka_mock_topic_create(cluster, name, partitions, replicationFactor).rawValue
    }

    func setBrokerDown(_ id: Int32) -> Int32 { rd_kafka_mock_broker_set_down(cluster, id).rawValue }

    func setBrokerUp(_ id: Int32) -> Int32 { rd_kafka_mock_broker_set_up(cluster, id).rawValue }

    func setRoundTripTime(broker id: Int32, milliseconds: Int32) -> Int32 {
        rd_kafka_mock_broker_set_rtt(cluster, id, milliseconds).rawValue
    }

    func setPartitionLeader(topic: String, partition: Int32, broker: Int32) -> Int32 {
        rd_kafka_mock_partition_set_leader(cluster, topic, partition, broker).rawValue
    }

    func pushRequestErrors(api: Int16, errors: [Int32]) {
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
        codes.withUnsafeBufferPointer { buffer in
            rd_kafka_mock_push_request_errors_array(cluster, api, buffer.count, buffer.baseAddress)
        }
    }

    func clearRequestErrors(api: Int16) {
        rd_kafka_mock_clear_request_errors(cluster, api)
    }

    /// How many errors are still queued for `api` on one broker, or an error code.
    func brokerErrorStackCount(broker: Int32, api: Int16) -> (count: Int, error: Int32) {
        var count = 0
        let error = rd_kafka_mock_broker_error_stack_cnt(cluster, broker, api, &count).rawValue
        return (count, error)
    }

    /// Pushes one (error, delay) entry onto a broker's error stack for `api`.
    ///
    /// librdkafka 2.0.2 has this only as a C variadic function
    /// (`rd_kafka_mock_broker_push_request_error_rtts(mcluster, broker, api, cnt, ...)`), which Swift
    /// cannot call, and no `_array` form. We look the symbol up and call it through a fixed-arity
    /// pointer with `cnt == 1`, so the two variadic `int`s are the 5th and 6th integer arguments.
    /// On the Linux x86-64 (System V) and arm64 (AAPCS64) ABIs those travel in the same registers
    /// (r8/r9, x4/x5) whether or not the callee is variadic; the x86-64 hidden `%al` (count of vector
    /// registers) only bounds which XMM registers a callee spills, and this function's prologue in
    /// Debian's build does not read it. Apple's arm64 ABI passes variadic arguments on the stack,
    /// so other platforms get `nil` here rather than a wrong call.
    func pushBrokerRequestError(broker: Int32, api: Int16, error: Int32, roundTripMilliseconds: Int32) -> Int32? {
        guard let push = Self.brokerPushFunction else { return nil }
        return push(cluster, broker, api, 1, error, roundTripMilliseconds)
    }

    private typealias BrokerPush = @convention(c) (OpaquePointer, Int32, Int16, Int, Int32, Int32) -> Int32

    private static let brokerPushFunction: BrokerPush? = {
        #if os(Linux) && (arch(x86_64) || arch(arm64))
        guard let program = dlopen(nil, RTLD_NOW),
              let symbol = dlsym(program, "rd_kafka_mock_broker_push_request_error_rtts") else { return nil }
        return unsafeBitCast(symbol, to: BrokerPush.self)
        #else
        return nil
        #endif
    }()
}

/// librdkafka's table of error codes: every `rd_kafka_resp_err_t` with its name and description.
/// Read at run time so the names always match the linked library.
enum ErrorCodeTable {
    struct Entry: Sendable {
        var code: Int32
        var name: String
        var description: String
    }

    static let entries: [Entry] = {
        var descriptions: UnsafePointer<rd_kafka_err_desc>?
        var count = 0
        rd_kafka_get_err_descs(&descriptions, &count)
        guard let descriptions else { return [] }
        var result: [Entry] = []
        for index in 0..<count {
            let entry = descriptions[index]
            // The table has holes (entries without a name) between the ranges of codes.
            guard let name = entry.name else { continue }
            result.append(Entry(code: entry.code.rawValue, name: String(cString: name),
                                description: entry.desc.map { String(cString: $0) } ?? ""))
        }
        return result
    }()

    /// librdkafka's name for a code (`rd_kafka_err2name`), e.g. `NOT_LEADER_FOR_PARTITION`.
    static func name(of code: Int32) -> String {
        String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }
}
