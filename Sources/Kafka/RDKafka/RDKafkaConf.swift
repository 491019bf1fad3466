import CRdKafka
import Foundation

/// Builds `rd_kafka_conf_t` objects from plain properties, surfacing librdkafka's own error text.
enum RDKafkaConf {
    /// Creates a conf with every property set. The caller owns the result (hand it to `rd_kafka_new`
    /// or destroy it).
    static func make(_ properties: [String: String]) throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(kind: .other, message: "rd_kafka_conf_new failed (out of memory)")
        }
        var errorText = [CChar](repeating: 0, count: 512)
        // Sorted so that the first rejected property is the same on every run.
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, name, value, &errorText, errorText.count)
            guard result == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                throw configurationError(
                    name: name, value: value, text: cBufferText(errorText),
                    unknown: result == RD_KAFKA_CONF_UNKNOWN)
            }
        }
        return conf
    }

    /// Validates properties by building (and destroying) a conf.
    static func validate(_ properties: [String: String]) throws(KafkaError) {
        let conf = try make(properties)
        rd_kafka_conf_destroy(conf)
    }

    static func configurationError(name: String, value: String, text: String, unknown: Bool) -> KafkaError {
        var message = text.isEmpty ? "librdkafka rejected the property" : text
        if KafkaConfiguration.isSecret(name), !value.isEmpty {
            // librdkafka may quote the value it rejects; never let a secret through.
            message = message.replacingOccurrences(of: value, with: KafkaConfiguration.redacted)
        }
        return KafkaError(
            kind: .configuration,
            codeName: unknown ? "CONF_UNKNOWN" : "CONF_INVALID",
            message: message,
            context: ["property": name, "value": KafkaConfiguration.printableValue(name: name, value: value)])
    }
}


/// The NUL-terminated text librdkafka wrote into an error buffer.
func cBufferText(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
