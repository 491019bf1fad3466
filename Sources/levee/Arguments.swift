import Foundation

/// A usage or run-time failure of a command, with the exit code the process ends with.
/// Usage mistakes exit 64 (EX_USAGE); failures of the work itself exit 1.
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32

    static func usage(_ message: String) -> CommandFailure { CommandFailure(message: message, exitCode: 64) }
    static func failed(_ message: String, exitCode: Int32 = 1) -> CommandFailure {
        CommandFailure(message: message, exitCode: exitCode)
    }
    var description: String { message }
}

/// The words after the command name, consumed by the command as it reads its options.
/// Options take `--name value` or `--name=value`; whatever is left at `finish()` is an error,
/// so a misspelt flag is reported rather than silently ignored.
struct Arguments {
    private var words: [String]
    private var positionals: [String] = []
    private var parsedPositionals = false

    init(_ words: [String]) { self.words = words }

    /// True when `--help` or `-h` is present anywhere.
    var wantsHelp: Bool { words.contains("--help") || words.contains("-h") }

    /// A boolean flag such as `--json`.
    mutating func flag(_ name: String) -> Bool {
        var found = false
        words.removeAll { word in
            if word == name { found = true; return true }
            return false
        }
        return found
    }

    /// Every value given for a repeatable option (`-X key=value -X key2=value2`).
    mutating func values(_ name: String) throws -> [String] {
        var result: [String] = []
        while let value = try takeOption(name) { result.append(value) }
        return result
    }

    /// The value of a single option, if present.
    mutating func option(_ name: String) throws -> String? {
        let first = try takeOption(name)
        if first != nil, try takeOption(name) != nil {
            throw CommandFailure.usage("\(name) given more than once")
        }
        return first
    }

    /// A typed option (`--jobs 20`); a value that does not parse is a usage error naming the option.
    mutating func option<T: LosslessStringConvertible>(_ name: String, as type: T.Type) throws -> T? {
        guard let raw = try option(name) else { return nil }
        guard let value = T(raw) else {
            throw CommandFailure.usage("\(name) expects \(Self.describe(type)), got '\(raw)'")
        }
        return value
    }

    /// The next positional word (one that is not an option).
    mutating func positional() -> String? {
        guard let index = words.firstIndex(where: { !$0.hasPrefix("-") || $0 == "-" }) else { return nil }
        return words.remove(at: index)
    }

    /// Reports anything left over: unknown flags or extra words.
    func finish() throws {
        guard let extra = words.first else { return }
        if extra.hasPrefix("-") {
            throw CommandFailure.usage("unknown option '\(extra)' (see --help)")
        }
        throw CommandFailure.usage("unexpected argument '\(extra)' (see --help)")
    }

    private mutating func takeOption(_ name: String) throws -> String? {
        guard let index = words.firstIndex(where: { $0 == name || $0.hasPrefix(name + "=") }) else { return nil }
        let word = words.remove(at: index)
        if word.count > name.count { return String(word.dropFirst(name.count + 1)) }
        guard index < words.count else { throw CommandFailure.usage("\(name) needs a value") }
        return words.remove(at: index)
    }

    private static func describe<T>(_ type: T.Type) -> String {
        switch type {
        case is Int.Type, is Int32.Type, is Int64.Type, is UInt64.Type: return "a whole number"
        case is Double.Type, is Float.Type: return "a number"
        default: return "a \(type)"
        }
    }
}

/// One `levee` sub-command. `help` is printed for `--help`; `run` reads its options from `arguments`.
protocol LeveeCommand: Sendable {
    static var name: String { get }
    static var summary: String { get }
    static var help: String { get }
    static func run(_ arguments: inout Arguments) async throws
    /// Commands with sub-commands (bench) print the sub-command's help themselves.
    static var handlesOwnHelp: Bool { get }
}

extension LeveeCommand {
    static var handlesOwnHelp: Bool { false }
}

/// Writes text to standard output at once (unbuffered, so streamed text and progress appear as
/// they happen even when stdout is a pipe). Commands use this rather than `print`.
func printOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Writes a line to standard error (progress and diagnostics; stdout stays for results).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Encodes a value as one line of JSON on stdout, keys sorted for stable output.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}
