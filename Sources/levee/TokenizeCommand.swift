import Foundation
import Inference

/// `levee tokenize`: the model's token ids for a text, read with the tokenizer in the GGUF file.
enum TokenizeCommand: LeveeCommand {
    static let name = "tokenize"
    static let summary = "Print the model's token ids for a text"
    static let help = """
    Usage: levee tokenize TEXT... [--chat] [--special] [--json] [--model PATH]

    Prints the token ids the model sees for TEXT, e.g. [6403, 1980, 253]. Several words are
    joined with spaces; TEXT "-" reads standard input (exactly, trailing newline included).

    Options:
      --chat          tokenize TEXT as a user message in the model's chat template
                      (default system turn and assistant generation prompt included)
      --special       recognise control tokens such as <|im_start|> written in TEXT
      --json          print {"count": N, "token_ids": [...], "tokens": [...]}; tokens are the
                      vocabulary entries in GPT-2 byte spelling ("Ġupon" is " upon")
      --model PATH    the GGUF file (default: $LEVEE_MODEL, else
                      ~/.cache/levee/models/SmolLM2-135M-Instruct.Q4_1.gguf from scripts/setup)
    """

    private struct Output: Encodable {
        var count: Int
        var tokenIDs: [Int32]
        var tokens: [String]
        enum CodingKeys: String, CodingKey {
            case count
            case tokenIDs = "token_ids"
            case tokens
        }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let chat = arguments.flag("--chat")
        let special = arguments.flag("--special")
        let json = arguments.flag("--json")
        let modelOption = try arguments.option("--model")
        var words: [String] = []
        while let word = arguments.positional() { words.append(word) }
        try arguments.finish()
        guard !words.isEmpty else {
            throw CommandFailure.usage("give the TEXT to tokenize (or - to read standard input)")
        }
        let text: String
        if words == ["-"] {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw CommandFailure.failed("standard input is not valid UTF-8")
            }
            text = decoded
        } else {
            text = words.joined(separator: " ")
        }

        let tokenizer: Tokenizer
        do {
            let path = try ModelLocation.resolve(explicit: modelOption)
            tokenizer = try Tokenizer(gguf: GGUFFile(path: path))
        } catch let error as InferenceError {
            throw CommandFailure.failed(error.description)
        } catch {
            throw CommandFailure.failed("cannot read the model: \(error)")
        }

        let ids: [Int32]
        if chat {
            ids = try ChatTemplate(tokenizer: tokenizer).tokens(for: [.user(text)], tokenizer: tokenizer)
        } else {
            ids = tokenizer.encode(text, parseSpecial: special)
        }
        if json {
            try printJSON(Output(count: ids.count, tokenIDs: ids, tokens: ids.map { tokenizer.spelling(of: $0) ?? "" }))
        } else {
            printOut("[" + ids.map(String.init).joined(separator: ", ") + "]\n")
        }
    }
}
