import Foundation
import Synchronization
import Testing
@testable import Inference

@Suite("Synthetic engine")
struct SyntheticEngineTests {
    static func engine(_ configure: (inout SyntheticEngine.Configuration) -> Void = { _ in }) throws -> SyntheticEngine {
        var configuration = SyntheticEngine.Configuration(delay: .fixed(.zero))
        configure(&configuration)
        return try SyntheticEngine(configuration: configuration)
    }

    @Test func isClearlyNamed() async throws {
        let engine = try Self.engine()
        #expect(engine.name == "synthetic")
        #expect(engine.modelID == "synthetic")
        let result = try await engine.generate(GenerationRequest(prompt: .text("hi")))
        #expect(result.model == "synthetic")
    }

    @Test func textIsDeterministicInPromptAndSeeds() async throws {
        let a = try Self.engine { $0.seed = 1 }
        let b = try Self.engine { $0.seed = 1 }
        let other = try Self.engine { $0.seed = 2 }
        let request = GenerationRequest(id: "j1", prompt: .chat([.user("Tell me a story")]))
        let first = try await a.generate(request)
        #expect(try await b.generate(request).text == first.text)
        #expect(try await a.generate(GenerationRequest(id: "j2", prompt: .chat([.user("Tell me a story")]))).text == first.text)
        #expect(try await a.generate(GenerationRequest(prompt: .chat([.user("Something else")]))).text != first.text)
        #expect(try await other.generate(request).text != first.text)
        var seeded = request
        seeded.sampling.seed = 77
        #expect(try await a.generate(seeded).text != first.text)
        #expect(first.completionTokens == 16)
        #expect(first.text.split(separator: " ").count == 16)
        #expect(first.promptTokens == 5) // "user: Tell me a story"
    }

    @Test func maxTokensStreamingAndFinishReason() async throws {
        let engine = try Self.engine { $0.tokensPerRequest = 10 }
        let pieces = Mutex<[String]>([])
        let short = try await engine.generate(GenerationRequest(prompt: .text("x"), sampling: .greedy(maxTokens: 4)),
                                              onText: { piece in pieces.withLock { $0.append(piece) } })
        #expect(short.completionTokens == 4)
        #expect(short.finishReason == .length)
        #expect(pieces.withLock { $0.joined() } == short.text)
        #expect(pieces.withLock { $0.count } == 4)
        let long = try await engine.generate(GenerationRequest(prompt: .text("x"), sampling: .greedy(maxTokens: 100)))
        #expect(long.completionTokens == 10)
        #expect(long.finishReason == .stop)
    }

    @Test func stopStringsCutTheText() async throws {
        let engine = try Self.engine()
        let full = try await engine.generate(GenerationRequest(prompt: .text("story")))
        let words = full.text.split(separator: " ")
        let stopWord = String(words[3])
        let stopped = try await engine.generate(GenerationRequest(prompt: .text("story"), sampling: SamplingParameters(stop: [" " + stopWord])))
        let cut = try #require(full.text.range(of: " " + stopWord))
        #expect(stopped.finishReason == .stop)
        #expect(stopped.text == String(full.text[..<cut.lowerBound]))
    }

    @Test func failureRateInjectsRetriableErrors() async throws {
        let always = try Self.engine { $0.failureRate = 1 }
        let error = await #expect(throws: InferenceError.self) { _ = try await always.generate(GenerationRequest(prompt: .text("x"))) }
        #expect(error?.isRetriable == true)
        #expect(error?.kind == .backendError(status: 503))

        let never = try Self.engine { $0.failureRate = 0 }
        for _ in 0..<50 { _ = try await never.generate(GenerationRequest(prompt: .text("x"))) }

        func failures(seed: UInt64) async throws -> [Bool] {
            let engine = try Self.engine { $0.failureRate = 0.3; $0.seed = seed }
            var outcomes: [Bool] = []
            for _ in 0..<300 {
                do { _ = try await engine.generate(GenerationRequest(prompt: .text("x"))); outcomes.append(false) }
                catch is InferenceError { outcomes.append(true) }
            }
            return outcomes
        }
        let run = try await failures(seed: 5)
        let share = Double(run.filter { $0 }.count) / 300
        #expect(share > 0.2 && share < 0.4)
        #expect(try await failures(seed: 5) == run) // reproducible per seed
    }

    @Test func cancellationStopsBetweenTokens() async throws {
        let engine = try Self.engine { $0.delay = .fixed(.seconds(20)) }
        let task = Task { try await engine.generate(GenerationRequest(prompt: .text("x"))) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let result = try await task.value
        #expect(result.finishReason == .cancelled)
        #expect(result.completionTokens < 16)
    }

    @Test func uniformDelayIsDrawnWithinBounds() async throws {
        let engine = try Self.engine { $0.delay = .uniform(.milliseconds(1), .milliseconds(3)); $0.tokensPerRequest = 1 }
        let result = try await engine.generate(GenerationRequest(prompt: .text("x")))
        #expect(result.timings.totalMilliseconds >= 1)
    }

    @Test(arguments: [
        SyntheticEngine.Configuration(failureRate: 1.5),
        SyntheticEngine.Configuration(failureRate: -0.1),
        SyntheticEngine.Configuration(tokensPerRequest: 0),
        SyntheticEngine.Configuration(delay: .fixed(.milliseconds(-1))),
        SyntheticEngine.Configuration(delay: .uniform(.milliseconds(5), .milliseconds(1))),
    ])
    func badConfigurationsAreRejected(_ configuration: SyntheticEngine.Configuration) {
        #expect(throws: InferenceError.self) { try SyntheticEngine(configuration: configuration) }
    }
}
