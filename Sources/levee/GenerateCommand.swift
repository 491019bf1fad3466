import Foundation

/// `levee generate`: Generate text with the local model (not built yet).
enum GenerateCommand: LeveeCommand {
    static let name = "generate"
    static let summary = "Generate text with the local model"
    static let help = "Usage: levee generate (not built yet)"

    static func run(_ arguments: inout Arguments) async throws {
        throw CommandFailure.failed("'levee generate' is not built yet")
    }
}
