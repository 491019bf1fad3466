import Foundation
import Inference

/// `levee bench inference`: prompt processing, single-stream decode, batched decode at several
/// batch sizes, time to first token and memory of the local GGUF model, for each kernel set
/// (float and int8) side by side: every run measures each set in turn, so both see the same
/// machine load. Greedy decoding throughout, so every run does the same work; each figure is
/// the best of `--runs`.
enum InferenceBench {
    static let summary = "Prompt and decode speed of the local model, single stream and batched, float vs int8 kernels"
    static let help = """
    Usage: levee bench inference [--tokens N] [--batches 1,4,8,16] [--prompt-tokens P] [--runs R]
                                 [--threads T] [--kernels float,int8] [--model PATH] [--json]

    Measures, with the model's forward pass and greedy sampling (no tokenizer, no engine queue):
      prompt        P prompt tokens evaluated in chunks of 32 (tokens/s)
      first token   prompt evaluation plus the first generated token (ms)
      decode        N tokens generated one at a time by one sequence (tokens/s)
      batch B       B sequences decoded together for N steps (aggregate tokens/s, and × single)
      memory        resident set after each kernel set's runs, and the process's peak (getrusage)
    The load average (1 minute) is printed before and after: the figures depend on it.

    Options:
      --tokens N          tokens to decode per sequence (default 128)
      --batches LIST      batch sizes for aggregate decode (default 1,4,8,16)
      --prompt-tokens P   prompt length (default 128)
      --runs R            repetitions; the best of each is reported (default 3)
      --threads T         threads for the forward pass (default: all cores)
      --kernels LIST      kernel sets to compare, measured in turn within each run
                          (default: float and, where the CPU has AVX2/FMA, int8)
      --model PATH        the GGUF file (default: $LEVEE_MODEL, then the cache path)
      --json              one JSON object instead of the table

    LEVEE_THREAD_POOL=dispatch selects DispatchQueue.concurrentPerform instead of the spinning
    worker threads (the report names the pool).
    """

    struct Report: Encodable {
        var model: String
        var threads: Int
        var threadPool: String
        var runs: Int
        var promptTokens: Int
        var decodeTokens: Int
        var loadAverageBefore: Double
        var loadAverageAfter: Double
        var kernels: [KernelFigures]
        var peakMemoryMiB: Double

        enum CodingKeys: String, CodingKey {
            case model, threads, runs, kernels
            case threadPool = "thread_pool"
            case promptTokens = "prompt_tokens"
            case decodeTokens = "decode_tokens"
            case loadAverageBefore = "load_average_before"
            case loadAverageAfter = "load_average_after"
            case peakMemoryMiB = "peak_memory_mib"
        }
    }

    /// The figures of one kernel set.
    struct KernelFigures: Encodable {
        var kernels: String
        var promptTokensPerSecond: Double
        var firstTokenMilliseconds: Double
        var decodeTokensPerSecond: Double
        var batches: [BatchFigure]
        var residentMemoryMiB: Double?

        enum CodingKeys: String, CodingKey {
            case kernels, batches
            case promptTokensPerSecond = "prompt_tokens_per_second"
            case firstTokenMilliseconds = "first_token_ms"
            case decodeTokensPerSecond = "decode_tokens_per_second"
            case residentMemoryMiB = "resident_memory_mib"
        }
    }

    struct BatchFigure: Encodable {
        var batch: Int
        var aggregateTokensPerSecond: Double
        var perSequenceTokensPerSecond: Double
        /// Aggregate over the single-stream decode figure of the same kernels.
        var timesSingle: Double

        enum CodingKeys: String, CodingKey {
            case batch
            case aggregateTokensPerSecond = "aggregate_tokens_per_second"
            case perSequenceTokensPerSecond = "per_sequence_tokens_per_second"
            case timesSingle = "times_single"
        }
    }

    /// The best figures so far of one kernel set.
    struct Best {
        var prompt = 0.0, first = Double.infinity, decode = 0.0
        var batch: [Int: Double] = [:]
        var resident: Double?
    }

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let tokens = try arguments.option("--tokens", as: Int.self) ?? 128
        let promptTokens = try arguments.option("--prompt-tokens", as: Int.self) ?? 128
        let runs = try arguments.option("--runs", as: Int.self) ?? 3
        let threads = try arguments.option("--threads", as: Int.self) ?? ProcessInfo.processInfo.activeProcessorCount
        let modelOption = try arguments.option("--model")
        let batchesText = try arguments.option("--batches") ?? "1,4,8,16"
        let kernelsText = try arguments.option("--kernels")
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
        let kernelSets: [KernelSet]
        if let kernelsText {
            kernelSets = try kernelsText.split(separator: ",").map { word -> KernelSet in
                let name = word.trimmingCharacters(in: .whitespaces)
                guard let k = KernelSet(name: name) else {
                    throw CommandFailure.usage("--kernels expects float and/or int8 separated by commas, got '\(kernelsText)'")
                }
                guard k.availableOrFloat == k else {
                    throw CommandFailure.usage("--kernels \(name): this CPU lacks AVX2/FMA/F16C (or is not x86-64); only float runs here")
                }
                return k
            }
            guard !kernelSets.isEmpty else { throw CommandFailure.usage("--kernels expects float and/or int8") }
        } else {
            kernelSets = KernelSet.int8Supported ? [.float, .int8] : [.float]
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
        let maxRows = max(chunk, batches.max() ?? 1)
        let vocab = c.vocabularySize
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: vocab * maxRows)
        defer { logits.deallocate() }
        // A fixed, varied prompt: token ids spread over the vocabulary.
        let prompt = (0..<promptTokens).map { ($0 * 7919 + 13) % (vocab - 256) + 256 }
        let loadBefore = loadAverage()

        // One runner per kernel set, made up front (their pools' idle workers sleep).
        let runners = kernelSets.map { LlamaRunner(model: model, maxRows: maxRows, threads: threads, kernels: $0) }
        var best = [Best](repeating: Best(), count: kernelSets.count)
        for run in 0..<runs {
            for (k, runner) in runners.enumerated() {
                if !json { printError("run \(run + 1)/\(runs), \(runner.kernels) kernels…") }
                measure(runner, prompt: prompt, tokens: tokens, batches: batches, chunk: chunk, logits: logits, into: &best[k])
                if run == runs - 1 { best[k].resident = residentMiB() }
            }
        }

        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage) // Glibc exposes RUSAGE_SELF as an enum
        let figures = zip(kernelSets, best).map { kernels, b in
            KernelFigures(
                kernels: kernels.rawValue, promptTokensPerSecond: b.prompt, firstTokenMilliseconds: b.first,
                decodeTokensPerSecond: b.decode,
                batches: batches.map { .init(batch: $0, aggregateTokensPerSecond: b.batch[$0]!,
                                             perSequenceTokensPerSecond: b.batch[$0]! / Double($0),
                                             timesSingle: b.batch[$0]! / b.decode) },
                residentMemoryMiB: b.resident)
        }
        let report = Report(
            model: (path as NSString).lastPathComponent, threads: threads,
            threadPool: runners[0].pool.usesDispatch ? "dispatch" : "spinning", runs: runs,
            promptTokens: promptTokens, decodeTokens: tokens,
            loadAverageBefore: loadBefore, loadAverageAfter: loadAverage(),
            kernels: figures, peakMemoryMiB: Double(usage.ru_maxrss) / 1024)
        if json {
            try printJSON(report)
            return
        }
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        func row(_ label: String, _ values: [String]) -> String {
            label.padding(toLength: 28, withPad: " ", startingAt: 0)
                + values.map { $0.padding(toLength: 18, withPad: " ", startingAt: 0) }.joined() + "\n"
        }
        var out = "model \(report.model), \(threads) threads (\(report.threadPool) pool), best of \(runs); "
            + "load average \(f(loadBefore)) → \(f(report.loadAverageAfter))\n"
        out += row("", figures.map(\.kernels))
        out += row("prompt (\(promptTokens) tokens), tok/s", figures.map { f($0.promptTokensPerSecond) })
        out += row("first token, ms", figures.map { f($0.firstTokenMilliseconds) })
        out += row("decode, single stream, tok/s", figures.map { f($0.decodeTokensPerSecond) })
        for (i, b) in batches.enumerated() {
            out += row("decode, batch \(b), tok/s", figures.map {
                "\(f($0.batches[i].aggregateTokensPerSecond)) (\(String(format: "%.2f", $0.batches[i].timesSingle))×)"
            })
        }
        out += row("resident memory, MiB", figures.map { $0.residentMemoryMiB.map(f) ?? "—" })
        out += "peak memory (process)       \(f(report.peakMemoryMiB)) MiB\n"
        printOut(out)
    }

    /// One run of every figure on `runner`, folded into `best`.
    private static func measure(_ runner: LlamaRunner, prompt: [Int], tokens: Int, batches: [Int], chunk: Int,
                                logits: UnsafeMutablePointer<Float>, into best: inout Best) {
        let model = runner.model
        let vocab = model.configuration.vocabularySize
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

        // Prompt and first token.
        let cache = model.makeCache()
        var first = 0
        let promptTime = seconds { prefill(cache, prompt) }
        let firstTime = promptTime + seconds {
            first = argmax(0)
            runner.step([.init(token: first, cache: cache, wantsLogits: true)], logits: logits)
        }
        best.prompt = max(best.prompt, Double(prompt.count) / promptTime)
        best.first = min(best.first, firstTime * 1000)

        // Single-stream decode.
        var next = argmax(0)
        let decodeTime = seconds {
            for _ in 0..<tokens {
                runner.step([.init(token: next, cache: cache, wantsLogits: true)], logits: logits)
                next = argmax(0)
            }
        }
        best.decode = max(best.decode, Double(tokens) / decodeTime)

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
            best.batch[b] = max(best.batch[b] ?? 0, Double(b * tokens) / time)
        }
    }

    /// The 1-minute load average (0 where unavailable).
    private static func loadAverage() -> Double {
        var loads = [Double](repeating: 0, count: 3)
        return getloadavg(&loads, 3) >= 1 ? loads[0] : 0
    }

    /// Resident set size now (Linux: /proc/self/statm), nil elsewhere.
    private static func residentMiB() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Double(fields[1]) else { return nil }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }
}
