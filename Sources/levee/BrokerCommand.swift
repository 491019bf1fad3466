import Foundation

/// `levee broker`: Run an embedded, memory-only Kafka cluster for development and tests (not built yet).
enum BrokerCommand: LeveeCommand {
    static let name = "broker"
    static let summary = "Run an embedded, memory-only Kafka cluster for development and tests"
    static let help = "Usage: levee broker (not built yet)"

    static func run(_ arguments: inout Arguments) async throws {
        throw CommandFailure.failed("'levee broker' is not built yet")
    }
}
