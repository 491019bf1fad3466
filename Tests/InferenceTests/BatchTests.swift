import Foundation
import Testing
@testable import Inference

/// Runs sequences through a scheduler and collects their outcomes.
final class OutcomeCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [Int: BatchSequence.Outcome] = [:]
    private let done = DispatchSemaphore(value: 0)

    func sequence(_ index: Int, prompt: [Int32], maxTokens: Int, vocab: Int, seed: UInt64? = nil,
                  temperature: Float = 0, stopAfter: Int? = nil, onFirstToken: DispatchSemaphore? = nil) throws -> BatchSequence {
        let params = temperature == 0 ? SamplingParameters.greedy(maxTokens: maxTokens)
            : SamplingParameters(maxTokens: maxTokens, temperature: temperature, topK: 40, topP: 0.95, seed: seed)
        var seen = 0
        return BatchSequence(
            prompt: prompt, sampler: try Sampler(parameters: params, vocabularySize: vocab), maxTokens: maxTokens,
            onToken: { _ in
                seen += 1
                if seen == 1 { onFirstToken?.signal() }
                if let stopAfter, seen >= stopAfter { return .finish(.stop) }
                return .proceed
            },
            onFinish: { [self] outcome in
                lock.lock(); outcomes[index] = outcome; lock.unlock()
                done.signal()
            })
    }

    func wait(_ n: Int) -> [Int: BatchSequence.Outcome] {
        for _ in 0..<n { done.wait() }
        lock.lock(); defer { lock.unlock() }
        return outcomes
    }
}

@Suite(.serialized) struct BatchTests {
    static let prompts: [[Int32]] = [
        [6403, 1980, 253, 655, 28, 665, 436, 253, 1838, 2644, 617],
        [504, 3575, 282, 4649, 314],
        [22, 23, 24],
        [9522, 28, 957, 416, 346],
        [1780, 1300, 3726, 30, 378, 2096],
    ]

    @Test(arguments: KernelSet.supported) func batchedGreedyEqualsSingleRuns(kernels: KernelSet) throws {
        guard let path = ModelFile.path else { return }
        let model = try LlamaModel(path: path)
        let vocab = model.configuration.vocabularySize
        let tokens = 6

        // One at a time.
        var single: [[Int32]] = []
        let alone = BatchScheduler(model: model, maxBatch: 1, maxRows: 16, kernels: kernels)
        defer { alone.shutdown() }
        for (i, p) in Self.prompts.enumerated() {
            let c = OutcomeCollector()
            alone.submit(try c.sequence(i, prompt: p, maxTokens: tokens, vocab: vocab))
            single.append(c.wait(1)[i]!.generated)
        }

        // All together, with a small row budget so prompts are chunked across steps while
        // other sequences decode, and the last ones join later (continuous batching).
        let together = BatchScheduler(model: model, maxBatch: 4, maxRows: 8, kernels: kernels)
        defer { together.shutdown() }
        let c = OutcomeCollector()
        for (i, p) in Self.prompts.enumerated() {
            together.submit(try c.sequence(i, prompt: p, maxTokens: tokens + i % 2, vocab: vocab))
        }
        let batched = c.wait(Self.prompts.count)
        for i in Self.prompts.indices {
            let got = try #require(batched[i])
            #expect(Array(got.generated.prefix(tokens)) == single[i], "sequence \(i)")
            #expect(got.generated.count == tokens + i % 2)
            #expect(got.reason == .length)
            #expect(got.promptTokens == Self.prompts[i].count)
        }
    }

    @Test func seededSamplingIsReproducibleInAndOutOfBatches() throws {
        guard let path = ModelFile.path else { return }
        let model = try LlamaModel(path: path)
        let vocab = model.configuration.vocabularySize
        let scheduler = BatchScheduler(model: model, maxBatch: 8, maxRows: 32)
        defer { scheduler.shutdown() }
        let a = OutcomeCollector()
        scheduler.submit(try a.sequence(0, prompt: Self.prompts[0], maxTokens: 8, vocab: vocab, seed: 42, temperature: 0.9))
        let alone = a.wait(1)[0]!.generated
        let b = OutcomeCollector()
        for i in 0..<3 {
            scheduler.submit(try b.sequence(i, prompt: Self.prompts[0], maxTokens: 8, vocab: vocab, seed: i == 1 ? 42 : UInt64(i + 7), temperature: 0.9))
        }
        let together = b.wait(3)
        #expect(together[1]!.generated == alone)
        #expect(alone.count == 8)
    }

    @Test func handlerStopAndCancellationEndSequencesEarly() throws {
        guard let path = ModelFile.path else { return }
        let model = try LlamaModel(path: path)
        let vocab = model.configuration.vocabularySize
        let scheduler = BatchScheduler(model: model, maxBatch: 4, maxRows: 16)
        defer { scheduler.shutdown() }
        let c = OutcomeCollector()
        let stopped = try c.sequence(0, prompt: Self.prompts[1], maxTokens: 50, vocab: vocab, stopAfter: 3)
        let cancelledEarly = try c.sequence(1, prompt: Self.prompts[2], maxTokens: 50, vocab: vocab)
        cancelledEarly.cancel()
        let firstToken = DispatchSemaphore(value: 0)
        let running = try c.sequence(2, prompt: Self.prompts[3], maxTokens: 10_000, vocab: vocab, onFirstToken: firstToken)
        scheduler.submit(stopped)
        scheduler.submit(cancelledEarly)
        scheduler.submit(running)
        // Cancel the long one once it has produced something.
        firstToken.wait()
        running.cancel()
        let outcomes = c.wait(3)
        #expect(outcomes[0]!.reason == .stop && outcomes[0]!.generated.count == 3)
        #expect(outcomes[1]!.reason == .cancelled && outcomes[1]!.generated.isEmpty)
        #expect(outcomes[2]!.reason == .cancelled && outcomes[2]!.generated.count < 10_000)
    }
}

