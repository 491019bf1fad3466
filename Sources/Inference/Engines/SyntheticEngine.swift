import Foundation
import Synchronization

/// **Synthetic engine, for benchmarks and chaos tests only — it runs no model.** It answers
/// with made-up text after a configurable delay and fails a configurable share of requests with
/// a retriable error, so the pipeline's throughput, retries and dead-lettering can be measured
/// and tortured without the cost or the variance of real inference. Its `name` is "synthetic"
/// and results carry `model: "synthetic"` unless configured otherwise, so its output can never
/// be mistaken for a model's.
///
/// The text is a deterministic function of the prompt, the request's sampling seed and the
/// engine's seed: one word per "token", drawn from a fixed word list. Failures are drawn from the
/// engine's own seeded generator, so a run's sequence of failures is reproducible while a retried
/// job can succeed.
public final class SyntheticEngine: InferenceEngine {
    /// How long a request takes, spread evenly over its tokens.
    public enum Delay: Sendable, Equatable {
        case fixed(Duration)
        /// Uniformly distributed between the bounds (inclusive), drawn per request.
        case uniform(Duration, Duration)
    }

    public struct Configuration: Sendable, Equatable {
        public var delay: Delay
        /// Share of requests (0...1) that fail with a retriable `InferenceError` (HTTP-503-like
        /// `.backendError`), after half their delay.
        public var failureRate: Double
        /// Words generated when the request's `maxTokens` allows (fewer when it does not).
        public var tokensPerRequest: Int
        public var seed: UInt64
        public var modelID: String

        public init(delay: Delay = .fixed(.milliseconds(20)), failureRate: Double = 0, tokensPerRequest: Int = 16,
                    seed: UInt64 = 0, modelID: String = "synthetic") {
            self.delay = delay
            self.failureRate = failureRate
            self.tokensPerRequest = tokensPerRequest
            self.seed = seed
            self.modelID = modelID
        }

        /// Throws `.invalidRequest` naming the bad value.
        public func validate() throws(InferenceError) {
            guard failureRate.isFinite, (0...1).contains(failureRate) else {
                throw .invalidRequest("synthetic failure rate must be between 0 and 1, got \(failureRate)")
            }
            guard tokensPerRequest >= 1 else {
                throw .invalidRequest("synthetic tokens per request must be at least 1, got \(tokensPerRequest)")
            }
            switch delay {
            case .fixed(let d) where d < .zero:
                throw .invalidRequest("synthetic delay must not be negative, got \(d)")
            case .uniform(let low, let high) where low < .zero || high < low:
                throw .invalidRequest("synthetic delay range must be 0 ≤ low ≤ high, got \(low)...\(high)")
            default:
                break
            }
        }
    }

    public let name = "synthetic"
    public var modelID: String { configuration.modelID }
    public let configuration: Configuration
    private let generator: Mutex<SeededGenerator>

    public init(configuration: Configuration = Configuration()) throws(InferenceError) {
        try configuration.validate()
        self.configuration = configuration
        self.generator = Mutex(SeededGenerator(seed: configuration.seed ^ 0x5EED_5EED_5EED_5EED))
    }

    private static let words = [
        "river", "levee", "stone", "water", "bright", "quiet", "morning", "harbor", "signal", "token",
        "lantern", "meadow", "copper", "silver", "window", "thunder", "garden", "orbit", "paper", "winter",
        "forest", "ember", "cloud", "anchor", "market", "candle", "valley", "bridge", "echo", "compass",
    ]

    public func generate(_ request: GenerationRequest, onText: (@Sendable (String) -> Void)?) async throws -> GenerationResult {
        try request.sampling.validate()
        let started = ContinuousClock.now
        let model = request.model ?? configuration.modelID
        let (delay, fails) = generator.withLock { generator -> (Duration, Bool) in
            let delay: Duration
            switch configuration.delay {
            case .fixed(let d): delay = d
            case .uniform(let low, let high): delay = low + (high - low) * generator.nextUnit()
            }
            return (delay, generator.nextUnit() < configuration.failureRate)
        }

        let promptText: String
        switch request.prompt {
        case .text(let text): promptText = text
        case .chat(let messages): promptText = messages.map { "\($0.role.rawValue): \($0.content)" }.joined(separator: "\n")
        }
        let promptTokens = promptText.split(whereSeparator: \.isWhitespace).count

        func cancelled(_ text: String, _ count: Int) -> GenerationResult {
            GenerationResult(text: text, promptTokens: promptTokens, completionTokens: count, finishReason: .cancelled,
                             timings: GenerationTimings(totalMilliseconds: Self.milliseconds(since: started)), model: model)
        }

        if fails {
            do { try await Task.sleep(for: delay / 2) } catch { return cancelled("", 0) }
            throw InferenceError.backendError(status: 503, "synthetic transient failure injected for \(request.id) (failure rate \(configuration.failureRate))")
        }

        // Text depends only on the prompt and the seeds.
        var words = SeededGenerator(seed: Self.fnv1a(promptText) ^ configuration.seed ^ (request.sampling.seed ?? 0))
        let count = min(configuration.tokensPerRequest, request.sampling.maxTokens)
        let perToken = delay / count
        var matcher = StopSequenceMatcher(stops: request.sampling.stop)
        var text = ""
        var generated = 0
        var firstToken: Double = 0
        var finish: FinishReason = count == request.sampling.maxTokens ? .length : .stop
        for index in 0..<count {
            if perToken > .zero {
                do { try await Task.sleep(for: perToken) } catch { return cancelled(text, generated) }
            }
            if Task.isCancelled { return cancelled(text, generated) }
            let word = Self.words[Int(words.next() % UInt64(Self.words.count))]
            let piece = index == 0 ? word.prefix(1).uppercased() + word.dropFirst() : " " + word
            generated += 1
            if index == 0 { firstToken = Self.milliseconds(since: started) }
            let (ready, stopped) = matcher.append(piece)
            if !ready.isEmpty { text += ready; onText?(ready) }
            if stopped { finish = .stop; break }
        }
        if !matcher.stopped {
            let rest = matcher.finish()
            if !rest.isEmpty { text += rest; onText?(rest) }
        }
        let total = Self.milliseconds(since: started)
        return GenerationResult(
            text: text, promptTokens: promptTokens, completionTokens: generated, finishReason: finish,
            timings: GenerationTimings(promptMilliseconds: 0, firstTokenMilliseconds: firstToken,
                                       decodeMilliseconds: total - firstToken, totalMilliseconds: total),
            model: model)
    }

    private static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return hash
    }

    private static func milliseconds(since start: ContinuousClock.Instant) -> Double {
        let (seconds, attoseconds) = (ContinuousClock.now - start).components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
