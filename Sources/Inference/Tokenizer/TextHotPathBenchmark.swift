import Foundation

/// Measures the text side's hot paths (tokenizer and sampler) so `levee bench inference` can
/// report them next to decode speed. Not used in tests: timings vary with the machine.
public enum TextHotPathBenchmark {
    /// About 10 KB of mixed text: English prose, numbers, punctuation, code, accents, CJK.
    public static let sampleText: String = {
        let paragraph = """
        Once upon a time, there was a little cat who lived near the river in 1999. It's 12:30 — \
        café au lait, naïve questions, 日本語の文章も少し. Numbers like 3.14159 and 2,718 appear; \
        so does code: `let total = items.reduce(0, +) // 42`.\n
        """
        var text = ""
        while text.utf8.count < 10_240 { text += paragraph }
        return text
    }()

    public struct TokenizerSpeed: Codable, Sendable, Equatable {
        public var bytes: Int
        public var tokens: Int
        public var encodeMilliseconds: Double
        public var decodeMilliseconds: Double
        public var tokensPerSecond: Double
        /// decode(encode(text)) == text
        public var roundTrips: Bool

        private enum CodingKeys: String, CodingKey {
            case bytes, tokens
            case encodeMilliseconds = "encode_ms"
            case decodeMilliseconds = "decode_ms"
            case tokensPerSecond = "tokens_per_second"
            case roundTrips = "round_trips"
        }
    }

    /// Encodes and decodes `text` repeatedly for at least `duration`; reports the mean per pass.
    public static func tokenizer(_ tokenizer: Tokenizer, text: String = sampleText, duration: Duration = .milliseconds(300)) -> TokenizerSpeed {
        var ids = tokenizer.encode(text)
        let decoded = tokenizer.decode(ids)
        let clock = ContinuousClock()
        var passes = 0
        let start = clock.now
        repeat {
            ids = tokenizer.encode(text)
            passes += 1
        } while clock.now - start < duration
        let encode = seconds(clock.now - start) / Double(passes)
        passes = 0
        let decodeStart = clock.now
        var sink = 0
        repeat {
            sink &+= tokenizer.decode(ids).utf8.count
            passes += 1
        } while clock.now - decodeStart < duration / 3
        let decode = seconds(clock.now - decodeStart) / Double(passes)
        return TokenizerSpeed(bytes: text.utf8.count, tokens: ids.count, encodeMilliseconds: encode * 1000,
                              decodeMilliseconds: decode * 1000, tokensPerSecond: Double(ids.count) / encode,
                              roundTrips: decoded == text && sink > 0)
    }

    public struct SamplerCost: Codable, Sendable, Equatable {
        public var setting: String
        public var microsecondsPerToken: Double

        private enum CodingKeys: String, CodingKey {
            case setting
            case microsecondsPerToken = "us_per_token"
        }
    }

    /// Per-token cost of sampling from `vocabularySize` random logits (uniform in [-5, 5], a flat
    /// and therefore expensive case for top-p) with a 64-token history, for common settings.
    public static func sampler(vocabularySize: Int = 49152, tokens: Int = 500) throws(InferenceError) -> [SamplerCost] {
        var random = SeededGenerator(seed: 2)
        let row = (0..<vocabularySize).map { _ in Float(random.nextUnit() * 10 - 5) }
        let history = (0..<64).map { _ in Int32(random.next() % UInt64(vocabularySize)) }
        let settings: [(String, SamplingParameters)] = [
            ("greedy", .greedy()),
            ("temperature 0.7, top-k 40, top-p 0.95", SamplingParameters(temperature: 0.7, topK: 40, topP: 0.95, seed: 1)),
            ("same + repetition penalty 1.1", SamplingParameters(temperature: 0.7, topK: 40, topP: 0.95, repetitionPenalty: 1.1, seed: 1)),
            ("temperature 0.8, full softmax", SamplingParameters(temperature: 0.8, topK: 0, topP: 1, seed: 1)),
            ("temperature 1, top-p 0.9 without top-k", SamplingParameters(temperature: 1, topK: 0, topP: 0.9, seed: 1)),
        ]
        var results: [SamplerCost] = []
        var scratch = row
        for (label, parameters) in settings {
            var sampler = try Sampler(parameters: parameters, vocabularySize: vocabularySize)
            let clock = ContinuousClock()
            var elapsed = Duration.zero
            var sink: Int32 = 0
            history.withUnsafeBufferPointer { h in
                for _ in 0..<tokens {
                    scratch.withUnsafeMutableBufferPointer { dst in row.withUnsafeBufferPointer { src in _ = dst.update(fromContentsOf: src) } }
                    let start = clock.now
                    sink &+= scratch.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: h) }
                    elapsed += clock.now - start
                }
            }
            results.append(SamplerCost(setting: label, microsecondsPerToken: seconds(elapsed) / Double(tokens) * 1e6))
        }
        return results
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}
