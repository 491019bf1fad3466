import Foundation

/// `levee version`: the Levee version (librdkafka's joins it with the Kafka layer).
enum VersionCommand: LeveeCommand {
    static let name = "version"
    static let summary = "Print Levee's version"
    static let help = """
    Usage: levee version [--json]

    Prints the version of Levee.

    Options:
      --json    one JSON object instead of text
    """
    static let leveeVersion = "0.1.0"

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        try arguments.finish()
        if json {
            try printJSON(["levee": leveeVersion])
        } else {
            printOut("levee \(leveeVersion)\n")
        }
    }
}
