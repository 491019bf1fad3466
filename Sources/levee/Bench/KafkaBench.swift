/// `levee bench kafka` (not built yet).
enum KafkaBench {
    static let summary = "Produce/consume throughput of the Swift Kafka layer vs raw librdkafka"
    static let help = "Usage: levee bench kafka (not built yet)"
    static func run(_ arguments: inout Arguments) async throws {
        throw CommandFailure.failed("'levee bench kafka' is not built yet")
    }
}
