import Foundation

/// The local engine: a GGUF Llama model run on this machine's CPU, with concurrent `generate`
/// calls decoded together by a `BatchScheduler` (continuous batching).
///
/// Seeded requests are reproducible bit for bit: a sequence's arithmetic does not depend on
/// which other sequences share its steps.
public final class LocalGGUFEngine: InferenceEngine {
    public let name = "local-gguf"
    public let modelID: String
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate
    private let scheduler: BatchScheduler

    /// Loads the model at `path` (memory-mapped) and its tokenizer.
    /// - Parameters:
    ///   - maxBatch: most requests decoded together; more wait for a slot.
    ///   - threads: threads for the forward pass (default: all cores).
    ///   - kernels: int8 or float matrix kernels (default: `KernelSet.preferred`, i.e.
    ///     `LEVEE_KERNELS` or int8 where the CPU has AVX2/FMA).
    public init(path: String, maxBatch: Int = 16, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                kernels: KernelSet = .preferred) throws(InferenceError) {
        do {
            model = try LlamaModel(path: path)
        } catch let error as GGUFError {
            throw .modelLoad(error.description)
        } catch {
            throw .modelLoad("\(path): \(error)")
        }
        tokenizer = try Tokenizer(gguf: model.file)
        guard tokenizer.vocabularySize <= model.configuration.vocabularySize else {
            throw .modelLoad("\(path): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(model.configuration.vocabularySize)")
        }
        chatTemplate = ChatTemplate(tokenizer: tokenizer)
        modelID = (path as NSString).lastPathComponent
        scheduler = BatchScheduler(model: model, maxBatch: maxBatch, maxRows: max(64, maxBatch), threads: threads, kernels: kernels)
    }

    deinit {
        scheduler.shutdown()
    }

    /// The prompt's token ids as the model will see them.
    public func promptTokens(_ prompt: Prompt) throws(InferenceError) -> [Int32] {
        switch prompt {
        case .text(let text):
            var ids: [Int32] = []
            if tokenizer.addsBOS, let bos = tokenizer.bosTokenID { ids.append(bos) }
            return ids + tokenizer.encode(text)
        case .chat(let messages):
            return try chatTemplate.tokens(for: messages, tokenizer: tokenizer)
        }
    }

    public func generate(_ request: GenerationRequest, onText: (@Sendable (String) -> Void)?) async throws -> GenerationResult {
        let started = DispatchTime.now().uptimeNanoseconds
        if let wanted = request.model, wanted != modelID, wanted != model.file.path {
            throw InferenceError.unknownModel(wanted)
        }
        try request.sampling.validate()
        let prompt = try promptTokens(request.prompt)
        guard !prompt.isEmpty else { throw InferenceError.invalidRequest("request \(request.id): the prompt is empty") }
        let context = model.configuration.contextLength
        guard prompt.count < context else {
            throw InferenceError.invalidRequest("request \(request.id): the prompt has \(prompt.count) tokens; the model's context is \(context)")
        }
        let sampler = try Sampler(parameters: request.sampling, vocabularySize: model.configuration.vocabularySize)
        let stream = TextStream(tokenizer: tokenizer, stops: request.sampling.stop, onText: onText)

        let modelID = self.modelID
        let box = ContinuationBox()
        let sequence = BatchSequence(
            prompt: prompt, sampler: sampler, maxTokens: request.sampling.maxTokens,
            onToken: { token in stream.accept(token) },
            onFinish: { outcome in
                let text = stream.finish()
                func ms(_ from: UInt64, _ to: UInt64) -> Double { Double(to &- from) / 1e6 }
                let first = outcome.firstTokenAt ?? outcome.finishedAt
                let timings = GenerationTimings(
                    promptMilliseconds: ms(outcome.admittedAt, first),
                    firstTokenMilliseconds: ms(started, first),
                    decodeMilliseconds: ms(first, outcome.finishedAt),
                    totalMilliseconds: ms(started, outcome.finishedAt))
                box.resume(GenerationResult(
                    text: text, tokenIDs: outcome.generated,
                    promptTokens: outcome.promptTokens, completionTokens: outcome.generated.count,
                    finishReason: outcome.reason, timings: timings, model: modelID))
            })
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<GenerationResult, Never>) in
                box.set(continuation)
                scheduler.submit(sequence)
            }
        } onCancel: {
            // Already-cancelled tasks get here before `submit`; the flag is read at the next step.
            sequence.cancel()
        }
    }
}

/// Hands the scheduler's result to the waiting task. Set before the sequence is submitted,
/// resumed once from the scheduler thread.
private final class ContinuationBox: @unchecked Sendable {
    // @unchecked Sendable: `continuation` is guarded by `lock`.
    private let lock = NSLock()
    private var continuation: CheckedContinuation<GenerationResult, Never>?

    func set(_ c: CheckedContinuation<GenerationResult, Never>) {
        lock.lock(); continuation = c; lock.unlock()
    }

    func resume(_ result: GenerationResult) {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume(returning: result)
    }
}

/// Turns a sequence's tokens into streamed text: whole UTF-8 characters only, stop strings held
/// back and cut, end-of-generation tokens ending the sequence. Used on the scheduler thread only.
private final class TextStream: @unchecked Sendable {
    // @unchecked Sendable: created by `generate` and then used only by the scheduler thread.
    private var decoder: StreamingDecoder
    private var matcher: StopSequenceMatcher
    private let endTokens: Set<Int32>
    private let onText: (@Sendable (String) -> Void)?
    private var text = ""

    init(tokenizer: Tokenizer, stops: [String], onText: (@Sendable (String) -> Void)?) {
        decoder = tokenizer.makeStreamingDecoder(skipSpecial: true)
        matcher = StopSequenceMatcher(stops: stops)
        endTokens = tokenizer.endOfGenerationTokenIDs
        self.onText = onText
    }

    private func emit(_ piece: String) {
        guard !piece.isEmpty else { return }
        text += piece
        onText?(piece)
    }

    func accept(_ token: Int32) -> BatchSequence.Decision {
        if endTokens.contains(token) { return .finish(.stop) }
        let (piece, stopped) = matcher.append(decoder.append(token))
        emit(piece)
        return stopped ? .finish(.stop) : .proceed
    }

    /// Flushes held-back text (an unfinished character, a partial stop string that never completed).
    func finish() -> String {
        if !matcher.stopped {
            let (piece, _) = matcher.append(decoder.finish())
            emit(piece)
            emit(matcher.finish())
        }
        return text
    }
}
