import Foundation
import Inference

/// `levee generate`: runs the local GGUF model on one prompt, streaming the text to stdout.
enum GenerateCommand: LeveeCommand {
    static let name = "generate"
    static let summary = "Generate text with the local model"
    static let help = """
    Usage: levee generate --prompt TEXT [--chat] [--system TEXT] [--max-tokens N] [--temperature T]
                          [--top-p P] [--top-k K] [--repetition-penalty R] [--seed S] [--stop STR]...
                          [--threads N] [--model PATH] [--json]

    Generates a completion of TEXT with the local model (SmolLM2-135M-Instruct by default) and
    streams it to stdout as it is produced; a speed line follows on stderr.

    Options:
      --prompt TEXT            the prompt (required)
      --chat                   treat TEXT as a user message in the model's chat template
      --system TEXT            system message for --chat (default: the template's own)
      --max-tokens N           most tokens to generate (default 256)
      --temperature T          0 is greedy (default 0.7)
      --top-p P                nucleus sampling (default 0.95)
      --top-k K                keep the K most likely tokens, 0 = all (default 40)
      --repetition-penalty R   1 = off (default 1)
      --seed S                 random seed: the same seed gives the same text
      --stop STR               stop before STR (repeatable)
      --threads N              threads for the forward pass (default: all cores)
      --model PATH             GGUF file (default: $LEVEE_MODEL, then ~/.cache/levee/models/…)
      --json                   print one JSON object (text, token ids, counts, finish reason,
                               timings) instead of streaming
    """

    struct Output: Encodable {
        var model: String
        var text: String
        var tokenIDs: [Int32]
        var promptTokens: Int
        var completionTokens: Int
        var finishReason: FinishReason
        var timings: GenerationTimings
        var seed: UInt64?
        var tokensPerSecond: Double

        enum CodingKeys: String, CodingKey {
            case model, text, timings, seed
            case tokenIDs = "token_ids"
            case promptTokens = "prompt_tokens"
            case completionTokens = "completion_tokens"
            case finishReason = "finish_reason"
            case tokensPerSecond = "tokens_per_second"
        }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let chat = arguments.flag("--chat")
        let system = try arguments.option("--system")
        let modelPath = try arguments.option("--model")
        let threads = try arguments.option("--threads", as: Int.self)
        var sampling = SamplingParameters()
        if let v = try arguments.option("--max-tokens", as: Int.self) { sampling.maxTokens = v }
        if let v = try arguments.option("--temperature", as: Float.self) { sampling.temperature = v }
        if let v = try arguments.option("--top-p", as: Float.self) { sampling.topP = v }
        if let v = try arguments.option("--top-k", as: Int.self) { sampling.topK = v }
        if let v = try arguments.option("--repetition-penalty", as: Float.self) { sampling.repetitionPenalty = v }
        if let v = try arguments.option("--seed", as: UInt64.self) { sampling.seed = v }
        sampling.stop = try arguments.values("--stop")
        let promptText = try arguments.option("--prompt")
        try arguments.finish()

        guard let promptText else { throw CommandFailure.usage("--prompt TEXT is required") }
        if system != nil && !chat { throw CommandFailure.usage("--system needs --chat") }
        if let threads, threads < 1 { throw CommandFailure.usage("--threads must be at least 1") }
        do { try sampling.validate() } catch { throw CommandFailure.usage(error.detail) }
        // Draw the seed here so that it can be reported and the run replayed.
        if sampling.seed == nil && sampling.temperature > 0 { sampling.seed = UInt64.random(in: 0...UInt64(UInt32.max)) }

        let engine: LocalGGUFEngine
        do {
            let path = try ModelLocation.resolve(explicit: modelPath)
            engine = try LocalGGUFEngine(path: path, maxBatch: 1, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        } catch {
            throw CommandFailure.failed("\(error)")
        }
        var messages: [ChatMessage] = []
        if let system { messages.append(.system(system)) }
        messages.append(.user(promptText))
        let request = GenerationRequest(prompt: chat ? .chat(messages) : .text(promptText), sampling: sampling)

        let result: GenerationResult
        do {
            // Written straight to the file handle: streamed pieces arrive on the scheduler thread.
            let stream: (@Sendable (String) -> Void)? = json ? nil : { @Sendable piece in FileHandle.standardOutput.write(Data(piece.utf8)) }
            result = try await engine.generate(request, onText: stream)
        } catch {
            throw CommandFailure.failed("\(error)")
        }
        let decodeTokens = max(0, result.completionTokens - 1)
        let rate = result.timings.decodeMilliseconds > 0 ? Double(decodeTokens) / (result.timings.decodeMilliseconds / 1000) : 0
        if json {
            try printJSON(Output(model: result.model, text: result.text, tokenIDs: result.tokenIDs,
                                 promptTokens: result.promptTokens, completionTokens: result.completionTokens,
                                 finishReason: result.finishReason, timings: result.timings,
                                 seed: sampling.seed, tokensPerSecond: rate))
            return
        }
        printOut("\n")
        var line = String(format: "%d prompt tokens, %d generated (%@), %.1f tokens/s, first token %.0f ms",
                          result.promptTokens, result.completionTokens, result.finishReason.rawValue,
                          rate, result.timings.firstTokenMilliseconds)
        if let seed = sampling.seed { line += ", seed \(seed)" }
        printError(line)
    }
}
