import Foundation

/// `levee tokenize`: Print the model's token ids for a text (not built yet).
enum TokenizeCommand: LeveeCommand {
    static let name = "tokenize"
    static let summary = "Print the model's token ids for a text"
    static let help = "Usage: levee tokenize (not built yet)"

    static func run(_ arguments: inout Arguments) async throws {
        throw CommandFailure.failed("'levee tokenize' is not built yet")
    }
}
