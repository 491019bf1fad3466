import Foundation
import Testing

/// Runs the built `levee` binary: LEVEE_BIN, else .build/release/levee, else .build/debug/levee.
private enum Levee {
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["LEVEE_BIN"], !path.isEmpty { return path }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let release = root.appendingPathComponent(".build/release/levee").path
        if FileManager.default.isExecutableFile(atPath: release) { return release }
        return root.appendingPathComponent(".build/debug/levee").path
    }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        let stderrData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus,
                       stdout: String(decoding: stdoutData, as: UTF8.self),
                       stderr: String(decoding: stderrData, as: UTF8.self))
    }
}

@Suite("levee tokenize (built binary, needs the model file)")
struct TokenizeCommandTests {
    @Test func printsTheReferenceIDs() throws {
        let result = try Levee.run(["tokenize", "Once upon a time, there was a little cat who"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "[6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 2644, 617]\n")
    }

    @Test func jsonOutput() throws {
        let result = try Levee.run(["tokenize", "--json", "Once upon", "a"])
        #expect(result.status == 0, "\(result.stderr)")
        struct Output: Decodable { var count: Int; var token_ids: [Int]; var tokens: [String] }
        let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
        #expect(output.token_ids == [6403, 1980, 253])
        #expect(output.tokens == ["Once", "Ġupon", "Ġa"])
        #expect(output.count == 3)
    }

    @Test func standardInputIsReadExactly() throws {
        let result = try Levee.run(["tokenize", "--json", "-"], stdin: "a\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"tokens\":[\"a\",\"Ċ\"]"))
    }

    @Test func chatWrapsTheTextInTheTemplate() throws {
        let chat = try Levee.run(["tokenize", "--chat", "Hi"])
        let plain = try Levee.run(["tokenize", "--special", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"])
        #expect(chat.status == 0 && plain.status == 0, "\(chat.stderr) \(plain.stderr)")
        #expect(chat.stdout.hasPrefix("[1, "))
        #expect(chat.stdout == plain.stdout)
        // Without --special the same markers are plain text.
        let literal = try Levee.run(["tokenize", "<|im_start|>"])
        #expect(!literal.stdout.hasPrefix("[1]"))
    }

    @Test func missingModelSaysHowToGetIt() throws {
        let result = try Levee.run(["tokenize", "x"], environment: ["LEVEE_MODEL": "/nonexistent/model.gguf"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/model.gguf"))
        #expect(result.stderr.contains("LEVEE_MODEL"))
        #expect(result.stderr.contains("scripts/setup"))
        let explicit = try Levee.run(["tokenize", "--model", "/nope.gguf", "x"])
        #expect(explicit.status == 1)
        #expect(explicit.stderr.contains("/nope.gguf (from --model)"))
    }

    @Test func usageErrors() throws {
        let none = try Levee.run(["tokenize"])
        #expect(none.status == 64)
        #expect(none.stderr.contains("TEXT"))
        let unknown = try Levee.run(["tokenize", "--bogus", "x"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("--bogus"))
    }
}
