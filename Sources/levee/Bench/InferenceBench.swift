import Foundation
import Inference

/// `levee bench inference`: prompt processing, single-stream decode, batched decode at several
/// batch sizes, time to first token and peak memory of the local GGUF model. Greedy decoding
/// throughout, so every run does the same work; each figure is the best of `--runs`.
enum InferenceBench {
    static let summary = "Prompt and decode speed of the local model, single stream and batched"
    static let help = """
    Usage: levee bench inference [--tokens N] [--batches 1,4,8,16] [--prompt-tokens P] [--runs R]
                                 [--threads T] [--model PATH] [--json]

    Measures, with the model's forward pass and greedy sampling (no tokenizer, no engine queue):
      prompt        P prompt tokens evaluated in chunks (tokens/s)
      first token   prompt evaluation plus the first generated token (ms)
      decode        N tokens generated one at a time by one sequence (tokens/s)
      batch B       B sequences decoded together for N steps (aggregate tokens/s)
      peak memory   maximum resident set size of the process (getrusage)

    Options:
      --tokens N          tokens to decode per sequence (default 128)
      --batches LIST      batch sizes for aggregate decode (default 1,4,8,16)
      --prompt-tokens P   prompt length (default 128)
      --runs R            repetitions; the best of each is reported (default 3)
      --threads T         threads for the forward pass (default: all cores)
      --model PATH        the GGUF file (default: $LEVEE_MODEL, then the cache path)
      --json              one JSON object instead of the table
    """

    struct Report: Encodable {
        var model: String
        var threads: Int
        var runs: Int
        var promptTokens: Int
        var decodeTokens: Int
        var promptTokensPerSecond: Double
        var firstTokenMilliseconds: Double
        var decodeTokensPerSecond: Double
        var batches: [BatchFigure]
        var peakMemoryMiB: Double

        struct BatchFigure: Encodable {
            var batch: Int
            var aggregateTokensPerSecond: Double
            var perSequenceTokensPerSecond: Double

            enum CodingKeys: String, CodingKey {
                case batch
                case aggregateTokensPerSecond = "aggregate_tokens_per_second"
                case perSequenceTokensPerSecond = "per_sequence_tokens_per_second"
            }
        }

        enum CodingKeys: String, CodingKey {
            case model, threads, runs, batches
            case promptTokens = "prompt_tokens"
            case decodeTokens = "decode_tokens"
            case promptTokensPerSecond = "prompt_tokens_per_second"
            case firstTokenMilliseconds = "first_token_ms"
            case decodeTokensPerSecond = "decode_tokens_per_second"
            case peakMemoryMiB = "peak_memory_mib"
        }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let tokens = try arguments.option("--tokens", as: Int.self) ?? 128
        let promptTokens = try arguments.option("--prompt-tokens", as: Int.self) ?? 128
        let runs = try arguments.option("--runs", as: Int.self) ?? 3
        let threads = try arguments.option("--threads", as: Int.self) ?? ProcessInfo.processInfo.activeProcessorCount
        let modelOption = try arguments.option("--model")
        let batchesText = try arguments.option("--batches") ?? "1,4,8,16"
        try arguments.finish()
        let batches = try batchesText.split(separator: ",").map { word -> Int in
            guard let b = Int(word.trimmingCharacters(in: .whitespaces)), b >= 1, b <= 256 else {
                throw CommandFailure.usage("--batches expects sizes 1...256 separated by commas, got '\(batchesText)'")
            }
            return b
        }
        guard tokens >= 1, promptTokens >= 1, runs >= 1, threads >= 1 else {
            throw CommandFailure.usage("--tokens, --prompt-tokens, --runs and --threads must be at least 1")
        }

        let path: String
        do { path = try ModelLocation.resolve(explicit: modelOption) } catch { throw CommandFailure.failed("\(error)") }
        let model: LlamaModel
        do { model = try LlamaModel(path: path) } catch { throw CommandFailure.failed("\(error)") }
        let c = model.configuration
        guard promptTokens + tokens + 1 <= c.contextLength else {
            throw CommandFailure.usage("prompt plus decoded tokens exceed the model's context of \(c.contextLength)")
        }
        let chunk = 32
        let runner = LlamaRunner(model: model, maxRows: max(chunk, batches.max() ?? 1), threads: threads)
        let vocab = c.vocabularySize
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: vocab * runner.maxRows)
        defer { logits.deallocate() }
        // A fixed, varied prompt: token ids spread over the vocabulary.
        let prompt = (0..<promptTokens).map { ($0 * 7919 + 13) % (vocab - 256) + 256 }

        func seconds(_ body: () -> Void) -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        func argmax(_ row: Int) -> Int {
            Int(Sampler.argmax(UnsafeBufferPointer(start: logits + row * vocab, count: vocab)))
        }
        func prefill(_ cache: KVCache, _ tokens: [Int]) {
            var i = 0
            while i < tokens.count {
                let end = min(tokens.count, i + chunk)
                let rows = (i..<end).map { LlamaRunner.Row(token: tokens[$0], cache: cache, wantsLogits: $0 == tokens.count - 1) }
                runner.step(rows, logits: logits)
                i = end
            }
        }

        var bestPrompt = 0.0, bestFirst = Double.infinity, bestDecode = 0.0
        var bestBatch = [Int: Double]()
        for run in 0..<runs {
            if !json { printError("run \(run + 1)/\(runs)…") }
            // Prompt and first token.
            let cache = model.makeCache()
            var first = 0
            let promptTime = seconds { prefill(cache, prompt) }
            let firstTime = promptTime + seconds {
                first = argmax(0)
                runner.step([.init(token: first, cache: cache, wantsLogits: true)], logits: logits)
            }
            bestPrompt = max(bestPrompt, Double(promptTokens) / promptTime)
            bestFirst = min(bestFirst, firstTime * 1000)

            // Single-stream decode.
            var next = argmax(0)
            let decodeTime = seconds {
                for _ in 0..<tokens {
                    runner.step([.init(token: next, cache: cache, wantsLogits: true)], logits: logits)
                    next = argmax(0)
                }
            }
            bestDecode = max(bestDecode, Double(tokens) / decodeTime)

            // Batched decode: B sequences with short distinct prompts, then N steps together.
            for b in batches {
                let caches = (0..<b).map { _ in model.makeCache() }
                var current = [Int](repeating: 0, count: b)
                for (s, cache) in caches.enumerated() {
                    prefill(cache, Array(prompt.prefix(16)) + [prompt[(16 + s) % prompt.count]])
                    current[s] = argmax(0)
                }
                let time = seconds {
                    for _ in 0..<tokens {
                        let rows = (0..<b).map { LlamaRunner.Row(token: current[$0], cache: caches[$0], wantsLogits: true) }
                        runner.step(rows, logits: logits)
                        for s in 0..<b { current[s] = argmax(s) }
                    }
                }
                bestBatch[b] = max(bestBatch[b] ?? 0, Double(b * tokens) / time)
            }
        }

        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage) // Glibc exposes RUSAGE_SELF as an enum
        let report = Report(
            model: (path as NSString).lastPathComponent, threads: threads, runs: runs,
            promptTokens: promptTokens, decodeTokens: tokens,
            promptTokensPerSecond: bestPrompt, firstTokenMilliseconds: bestFirst,
            decodeTokensPerSecond: bestDecode,
            batches: batches.map { .init(batch: $0, aggregateTokensPerSecond: bestBatch[$0]!, perSequenceTokensPerSecond: bestBatch[$0]! / Double($0)) },
            peakMemoryMiB: Double(usage.ru_maxrss) / 1024)
        if json {
            try printJSON(report)
            return
        }
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        var out = "model \(report.model), \(threads) threads, best of \(runs)\n"
        out += "prompt (\(promptTokens) tokens)      \(f(bestPrompt)) tokens/s\n"
        out += "first token                \(f(bestFirst)) ms\n"
        out += "decode, single stream      \(f(bestDecode)) tokens/s\n"
        for b in report.batches {
            out += "decode, batch \(b.batch)".padding(toLength: 27, withPad: " ", startingAt: 0)
                + "\(f(b.aggregateTokensPerSecond)) tokens/s aggregate (\(f(b.perSequenceTokensPerSecond)) per sequence)\n"
        }
        out += "peak memory                \(f(report.peakMemoryMiB)) MiB\n"
        printOut(out)
    }
}
