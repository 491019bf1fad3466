import Foundation
import Testing

/// Runs the built `levee` binary (see ``LeveeProcess``, which waits off the cooperative pool).
private enum Levee {
    static func run(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) async throws -> LeveeProcess.Output {
        try await LeveeProcess.run(arguments, stdin: stdin ?? "", environment: environment, timeout: 120)
    }
}

@Suite("levee tokenize (built binary, needs the model file)")
struct TokenizeCommandTests {
    @Test func printsTheReferenceIDs() async throws {
        let result = try await Levee.run(["tokenize", "Once upon a time, there was a little cat who"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "[6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 2644, 617]\n")
    }

    @Test func jsonOutput() async throws {
        let result = try await Levee.run(["tokenize", "--json", "Once upon", "a"])
        #expect(result.status == 0, "\(result.stderr)")
        struct Output: Decodable { var count: Int; var token_ids: [Int]; var tokens: [String] }
        let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
        #expect(output.token_ids == [6403, 1980, 253])
        #expect(output.tokens == ["Once", "Ġupon", "Ġa"])
        #expect(output.count == 3)
    }

    @Test func standardInputIsReadExactly() async throws {
        let result = try await Levee.run(["tokenize", "--json", "-"], stdin: "a\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"tokens\":[\"a\",\"Ċ\"]"))
    }

    @Test func chatWrapsTheTextInTheTemplate() async throws {
        let chat = try await Levee.run(["tokenize", "--chat", "Hi"])
        let plain = try await Levee.run(["tokenize", "--special", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"])
        #expect(chat.status == 0 && plain.status == 0, "\(chat.stderr) \(plain.stderr)")
        #expect(chat.stdout.hasPrefix("[1, "))
        #expect(chat.stdout == plain.stdout)
        // Without --special the same markers are plain text.
        let literal = try await Levee.run(["tokenize", "<|im_start|>"])
        #expect(!literal.stdout.hasPrefix("[1]"))
    }

    @Test func missingModelSaysHowToGetIt() async throws {
        let result = try await Levee.run(["tokenize", "x"], environment: ["LEVEE_MODEL": "/nonexistent/model.gguf"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/model.gguf"))
        #expect(result.stderr.contains("LEVEE_MODEL"))
        #expect(result.stderr.contains("scripts/setup"))
        let explicit = try await Levee.run(["tokenize", "--model", "/nope.gguf", "x"])
        #expect(explicit.status == 1)
        #expect(explicit.stderr.contains("/nope.gguf (from --model)"))
    }

    @Test func usageErrors() async throws {
        let none = try await Levee.run(["tokenize"])
        #expect(none.status == 64)
        #expect(none.stderr.contains("TEXT"))
        let unknown = try await Levee.run(["tokenize", "--bogus", "x"])
        #expect(unknown.status == 64)
        #expect(unknown.stderr.contains("--bogus"))
    }
}
