/// `levee bench inference` (not built yet).
enum InferenceBench {
    static let summary = "Prompt and decode speed of the local model, single stream and batched"
    static let help = "Usage: levee bench inference (not built yet)"
    static func run(_ arguments: inout Arguments) async throws {
        throw CommandFailure.failed("'levee bench inference' is not built yet")
    }
}
