import Foundation
import Testing
@testable import Inference

/// Collects streamed pieces from a `generate` call.
final class Pieces: @unchecked Sendable {
    private let lock = NSLock()
    private var pieces: [String] = []
    func add(_ s: String) { lock.lock(); pieces.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return pieces }
}

@Suite(.serialized) struct LocalEngineTests {
    static func engine(kernels: KernelSet = .preferred) throws -> LocalGGUFEngine? {
        guard let path = ModelFile.path else { return nil }
        return try LocalGGUFEngine(path: path, maxBatch: 8, kernels: kernels)
    }

    static let story = "Once upon a time, there was a little cat who"

    @Test(arguments: KernelSet.supported) func greedyContinuationMatchesReference(kernels: KernelSet) async throws {
        guard let engine = try Self.engine(kernels: kernels) else { return }
        #expect(try engine.promptTokens(.text(Self.story)) == LlamaTests.prompt.map(Int32.init))
        let pieces = Pieces()
        let result = try await engine.generate(
            GenerationRequest(prompt: .text(Self.story), sampling: .greedy(maxTokens: 9)),
            onText: { pieces.add($0) })
        #expect(result.text == " had a special way of making people happy.")
        #expect(pieces.all.joined() == result.text && pieces.all.count > 1)
        #expect(result.finishReason == .length && result.completionTokens == 9 && result.tokenIDs.count == 9)
        #expect(result.tokenIDs.first == 761)
        #expect(result.promptTokens == 11)
        #expect(result.timings.totalMilliseconds >= result.timings.firstTokenMilliseconds)
    }

    @Test func stopSequenceCutsTheText() async throws {
        guard let engine = try Self.engine() else { return }
        let result = try await engine.generate(GenerationRequest(
            prompt: .text(Self.story), sampling: .greedy(maxTokens: 20, stop: [" way"])))
        #expect(result.text == " had a special")
        #expect(result.finishReason == .stop)
    }

    @Test(arguments: KernelSet.supported) func concurrentRequestsGetTheirOwnAnswers(kernels: KernelSet) async throws {
        guard let engine = try Self.engine(kernels: kernels) else { return }
        let solo = try await engine.generate(GenerationRequest(prompt: .chat([.user("What is the capital of France.")]), sampling: .greedy(maxTokens: 12)))
        let results = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
            for i in 0..<4 {
                group.addTask {
                    let prompt: Prompt = i % 2 == 0 ? .chat([.user("What is the capital of France.")]) : .text(Self.story)
                    return (i, try await engine.generate(GenerationRequest(prompt: prompt, sampling: .greedy(maxTokens: 12))))
                }
            }
            var out: [Int: GenerationResult] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        #expect(results[0]!.tokenIDs == solo.tokenIDs && results[2]!.tokenIDs == solo.tokenIDs)
        #expect(results[1]!.text.hasPrefix(" had a special way"))
        #expect(solo.text.contains("Paris"), "answer: \(solo.text)")
    }

    @Test func seededRunsReproduce() async throws {
        guard let engine = try Self.engine() else { return }
        let params = SamplingParameters(maxTokens: 16, temperature: 1.0, topK: 50, topP: 0.95, seed: 1234)
        let a = try await engine.generate(GenerationRequest(prompt: .text(Self.story), sampling: params))
        let b = try await engine.generate(GenerationRequest(prompt: .text(Self.story), sampling: params))
        var other = params
        other.seed = 99
        let c = try await engine.generate(GenerationRequest(prompt: .text(Self.story), sampling: other))
        #expect(a.tokenIDs == b.tokenIDs && a.text == b.text)
        #expect(a.tokenIDs != c.tokenIDs)
    }

    @Test func cancellationStopsBetweenTokens() async throws {
        guard let engine = try Self.engine() else { return }
        let firstPiece = AsyncStream<Void>.makeStream()
        let task = Task {
            try await engine.generate(
                GenerationRequest(prompt: .text(Self.story), sampling: .greedy(maxTokens: 4000)),
                onText: { _ in firstPiece.continuation.yield() })
        }
        for await _ in firstPiece.stream { break }
        task.cancel()
        let result = try await task.value
        #expect(result.finishReason == .cancelled)
        #expect(result.completionTokens > 0 && result.completionTokens < 4000)

        // Cancelled before it starts: nothing is generated.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await engine.generate(GenerationRequest(prompt: .text(Self.story), sampling: .greedy(maxTokens: 50)))
        }
        let r = try await early.value
        #expect(r.finishReason == .cancelled && r.completionTokens == 0)
    }

    @Test func badRequestsAreRejected() async throws {
        guard let engine = try Self.engine() else { return }
        await #expect(throws: InferenceError.self) {
            try await engine.generate(GenerationRequest(prompt: .text(""), sampling: .greedy(maxTokens: 5)))
        }
        await #expect(throws: InferenceError.self) {
            try await engine.generate(GenerationRequest(prompt: .text("hi"), sampling: .greedy(maxTokens: 0)))
        }
        await #expect(throws: InferenceError.self) {
            try await engine.generate(GenerationRequest(prompt: .text("hi"), sampling: .greedy(maxTokens: 5), model: "other-model"))
        }
    }

    @Test func missingModelFileIsAModelLoadError() {
        #expect(throws: InferenceError.self) { try LocalGGUFEngine(path: "/nonexistent/model.gguf") }
    }
}
