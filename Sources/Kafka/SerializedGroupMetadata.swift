/// Reads librdkafka 2.0's serialized consumer group metadata (`rd_kafka_consumer_group_metadata_write`),
/// whose layout was checked against librdkafka itself: the magic `CGMDv2:`, the generation id as a
/// host-order (little-endian here) int32, the group id and the member id as NUL-terminated
/// strings, then one byte (1 = no group instance id, 0 = a NUL-terminated instance id follows).
enum SerializedGroupMetadata {
    static let magic = Array("CGMDv2:".utf8)

    static func parse(_ bytes: [UInt8]) -> (generation: Int32, member: String)? {
        guard bytes.count >= magic.count + 4, bytes.starts(with: magic) else { return nil }
        var index = magic.count
        var generation: UInt32 = 0
        for shift in 0..<4 { generation |= UInt32(bytes[index + shift]) << (8 * UInt32(shift)) }
        index += 4
        func string() -> String? {
            guard let end = bytes[index...].firstIndex(of: 0) else { return nil }
            defer { index = end + 1 }
            return String(decoding: bytes[index..<end], as: UTF8.self)
        }
        guard string() != nil, let member = string() else { return nil }
        return (Int32(bitPattern: generation), member)
    }
}
