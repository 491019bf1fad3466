import CRdKafka

/// The librdkafka this process runs with: the shared library loaded at run time, which can differ
/// from the headers Levee was compiled against (a distribution upgrade replaces the `.so`).
public enum KafkaLibrary {
    /// The loaded library's version, e.g. `2.0.2` (`rd_kafka_version_str`).
    public static var version: String { String(cString: rd_kafka_version_str()) }

    /// The loaded library's version as librdkafka encodes it, `0xMMmmrrxx` (`rd_kafka_version`).
    public static var versionNumber: Int { Int(rd_kafka_version()) }

    /// The version of the headers Levee was compiled against (`RD_KAFKA_VERSION`).
    public static var headerVersionNumber: Int { Int(RD_KAFKA_VERSION) }

    /// Major, minor and revision of an encoded version number.
    public static func components(of number: Int) -> (major: Int, minor: Int, revision: Int) {
        ((number >> 24) & 0xff, (number >> 16) & 0xff, (number >> 8) & 0xff)
    }

    /// The features the library was built with (`builtin.features`: `ssl`, `sasl_scram`, `zstd`, ...).
    public static var builtinFeatures: [String] {
        guard let conf = rd_kafka_conf_new() else { return [] }
        defer { rd_kafka_conf_destroy(conf) }
        var size = 0
        guard rd_kafka_conf_get(conf, "builtin.features", nil, &size) == RD_KAFKA_CONF_OK, size > 0 else { return [] }
        var text = [CChar](repeating: 0, count: size)
        guard rd_kafka_conf_get(conf, "builtin.features", &text, &size) == RD_KAFKA_CONF_OK else { return [] }
        return cBufferText(text).split(separator: ",").map(String.init)
    }
}
