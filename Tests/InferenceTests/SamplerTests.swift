import Foundation
import Testing
@testable import Inference

@Suite("SamplingParameters")
struct SamplingParametersTests {
    @Test(arguments: [
        (SamplingParameters(maxTokens: 0), "max_tokens"),
        (SamplingParameters(temperature: -0.1), "temperature"),
        (SamplingParameters(temperature: .nan), "temperature"),
        (SamplingParameters(topK: -1), "top_k"),
        (SamplingParameters(topP: 0), "top_p"),
        (SamplingParameters(topP: 1.5), "top_p"),
        (SamplingParameters(repetitionPenalty: 0), "repetition_penalty"),
        (SamplingParameters(repetitionWindow: -3), "repetition_window"),
        (SamplingParameters(stop: [""]), "stop"),
        (SamplingParameters(stop: Array(repeating: "x", count: 17)), "stop"),
    ])
    func badValuesAreRejectedByName(_ parameters: SamplingParameters, _ field: String) {
        let error = #expect(throws: InferenceError.self) { try parameters.validate() }
        #expect(error?.kind == .invalidRequest)
        #expect(error?.detail.contains(field) == true)
        #expect(error?.isRetriable == false)
    }

    @Test func defaultsAndGreedyAreValid() throws {
        try SamplingParameters().validate()
        try SamplingParameters.greedy(maxTokens: 1).validate()
    }

    @Test func jsonUsesSnakeCaseAndFillsDefaults() throws {
        let decoded = try JSONDecoder().decode(SamplingParameters.self, from: Data(#"{"max_tokens": 32, "top_k": 5, "seed": 7}"#.utf8))
        var expected = SamplingParameters()
        expected.maxTokens = 32
        expected.topK = 5
        expected.seed = 7
        #expect(decoded == expected)
        let encoded = String(decoding: try JSONEncoder().encode(expected), as: UTF8.self)
        #expect(encoded.contains("\"repetition_penalty\""))
        #expect(try JSONDecoder().decode(SamplingParameters.self, from: Data(encoded.utf8)) == expected)
    }
}

@Suite("SeededGenerator")
struct SeededGeneratorTests {
    @Test func matchesTheXoshiroReference() {
        // Values from a separate implementation of SplitMix64 seeding + xoshiro256**.
        var zero = SeededGenerator(seed: 0)
        #expect([zero.next(), zero.next(), zero.next()] == [0x99ec5f36cb75f2b4, 0xbf6e1f784956452a, 0x1a5f849d4933e6e0])
        var fortyTwo = SeededGenerator(seed: 42)
        #expect([fortyTwo.next(), fortyTwo.next(), fortyTwo.next()] == [0x15780b2e0c2ec716, 0x6104d9866d113a7e, 0xae17533239e499a1])
    }

    @Test func unitIntervalIsHalfOpen() {
        var generator = SeededGenerator(seed: 1)
        for _ in 0..<10_000 {
            let u = generator.nextUnit()
            #expect(u >= 0 && u < 1)
        }
    }
}

@Suite("Sampler")
struct SamplerTests {
    static func sampler(_ parameters: SamplingParameters, vocabulary: Int) throws -> Sampler {
        try Sampler(parameters: parameters, vocabularySize: vocabulary)
    }

    /// Logits whose softmax is `probabilities` (at temperature 1).
    static func logits(_ probabilities: [Float]) -> [Float] { probabilities.map { log($0) } }

    static func counts(_ sampler: inout Sampler, _ logits: [Float], draws: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<draws {
            var row = logits
            counts[Int(sampler.sample(logits: &row))] += 1
        }
        return counts
    }

    @Test func greedyTakesTheFirstMaximum() throws {
        var sampler = try Self.sampler(.greedy(), vocabulary: 5)
        var logits: [Float] = [0.1, 3, -2, 3, 1]
        #expect(sampler.sample(logits: &logits) == 1)
    }

    @Test func sameSeedSameTokensDifferentSeedDifferentTokens() throws {
        let vocabulary = 1000
        var generator = SeededGenerator(seed: 9)
        let rows = (0..<200).map { _ in (0..<vocabulary).map { _ in Float(generator.nextUnit() * 8) } }
        func run(seed: UInt64) throws -> [Int32] {
            var sampler = try Self.sampler(SamplingParameters(temperature: 0.9, topK: 50, topP: 0.9, seed: seed), vocabulary: vocabulary)
            return rows.map { row in var copy = row; return sampler.sample(logits: &copy) }
        }
        #expect(try run(seed: 123) == run(seed: 123))
        #expect(try run(seed: 123) != run(seed: 124))
        let unseeded = try Self.sampler(SamplingParameters(), vocabulary: 10)
        #expect(try Self.sampler(SamplingParameters(), vocabulary: 10).seed != unseeded.seed)
    }

    @Test func topKOneIsGreedyAtAnyTemperature() throws {
        var sampler = try Self.sampler(SamplingParameters(temperature: 5, topK: 1, topP: 1, seed: 1), vocabulary: 6)
        let logits: [Float] = [0, 0.5, 0.2, 0.49, 0.1, -1]
        #expect(Self.counts(&sampler, logits, draws: 200)[1] == 200)
    }

    @Test func topKKeepsOnlyTheBestK() throws {
        var sampler = try Self.sampler(SamplingParameters(temperature: 1, topK: 3, topP: 1, seed: 2), vocabulary: 8)
        let logits: [Float] = [1, 5, 0, 4.5, 2, 4.8, 3, 0]
        let counts = Self.counts(&sampler, logits, draws: 3000)
        #expect(counts[1] > 0 && counts[3] > 0 && counts[5] > 0)
        #expect(counts[1] + counts[3] + counts[5] == 3000)
    }

    @Test func topPKeepsTheSmallestNucleus() throws {
        // 0.5 + 0.3 = 0.8 ≥ 0.75: tokens 0 and 1 only, in proportion 5:3.
        var sampler = try Self.sampler(SamplingParameters(temperature: 1, topK: 0, topP: 0.75, seed: 3), vocabulary: 4)
        let counts = Self.counts(&sampler, Self.logits([0.5, 0.3, 0.15, 0.05]), draws: 8000)
        #expect(counts[2] == 0 && counts[3] == 0)
        let share = Double(counts[0]) / 8000
        #expect(abs(share - 0.625) < 0.03)
    }

    @Test func topPOnAFlatDistributionKeepsTheLowestIDsOfTheTie() throws {
        // 1000 equally likely tokens among near-impossible ones: the nucleus for 0.5 is ~500
        // tokens, all in one probability bucket, ordered by id.
        let vocabulary = 8192
        var logits = [Float](repeating: -30, count: vocabulary)
        for i in 0..<1000 { logits[i * 7] = 0 }
        var sampler = try Self.sampler(SamplingParameters(temperature: 1, topK: 0, topP: 0.5, seed: 4), vocabulary: vocabulary)
        var seen = Set<Int32>()
        for _ in 0..<400 {
            var row = logits
            let token = sampler.sample(logits: &row)
            #expect(token % 7 == 0 && token / 7 < 1000)
            seen.insert(token)
        }
        #expect(seen.count > 100)
        // Equal logits rank lower ids first, so the nucleus is the first ~half of them.
        #expect(seen.allSatisfy { $0 / 7 <= 501 })
    }

    @Test func fullSoftmaxFollowsTheDistribution() throws {
        let probabilities: [Float] = [0.1, 0.2, 0.4, 0.3]
        var sampler = try Self.sampler(SamplingParameters(temperature: 1, topK: 0, topP: 1, seed: 5), vocabulary: 4)
        let counts = Self.counts(&sampler, Self.logits(probabilities), draws: 20_000)
        for (count, p) in zip(counts, probabilities) {
            #expect(abs(Double(count) / 20_000 - Double(p)) < 0.015)
        }
    }

    @Test func lowTemperatureSharpens() throws {
        var sampler = try Self.sampler(SamplingParameters(temperature: 0.1, topK: 0, topP: 1, seed: 6), vocabulary: 3)
        let counts = Self.counts(&sampler, [1.0, 1.5, 0.5], draws: 2000)
        #expect(counts[1] > 1950)
    }

    @Test func repetitionPenaltyOncePerTokenWithinTheWindow() throws {
        var sampler = try Self.sampler(SamplingParameters(temperature: 0, topK: 0, topP: 1, repetitionPenalty: 2, repetitionWindow: 3), vocabulary: 4)
        var logits: [Float] = [4, 3.5, -1, 0]
        // Token 0 three times in the window: divided by 2 once (4 → 2), so token 1 wins.
        #expect(sampler.sample(logits: &logits, history: [0, 0, 0]) == 1)
        #expect(logits == [2, 3.5, -1, 0])
        // Negative logits are multiplied: -1 → -2.
        var negative: [Float] = [-1, -1.5, -3, -4]
        #expect(sampler.sample(logits: &negative, history: [0]) == 1)
        #expect(negative[0] == -2)
        // Outside the window (only the last 3 count): token 0 is not penalised.
        var windowed: [Float] = [4, 3.5, -1, 0]
        #expect(sampler.sample(logits: &windowed, history: [0, 3, 3, 3]) == 0)
    }

    @Test func vectorExponentialMatchesExpf() {
        var x: Float = -100
        while x <= 0 {
            let fast = Sampler.fastExp(SIMD8<Float>(repeating: x))[0]
            let exact = expf(x)
            if x < -87.5 {
                #expect(fast == 0)
            } else if x > -87 {
                // Range reduction rounds x·log2(e), so the error grows with |x| (about 5e-6 near -87).
                #expect(abs(fast - exact) <= exact * 1e-5, "x = \(x)")
            }
            x += 0.013
        }
        #expect(Sampler.fastExp(SIMD8<Float>(repeating: 0))[0] == 1)
    }

    @Test func nucleusOnRandomLogitsKeepsTheSortedPrefix() throws {
        // Compare the bucketed nucleus with a plain sort: every sampled token must lie in the
        // smallest prefix of the sorted probabilities whose mass reaches top-p.
        let vocabulary = 2000
        var generator = SeededGenerator(seed: 11)
        let logits = (0..<vocabulary).map { _ in Float(generator.nextUnit() * 12 - 6) }
        let topP: Float = 0.6
        let maximum = logits.max()!
        let weights = logits.map { Double(exp($0 - maximum)) }
        let total = weights.reduce(0, +)
        let order = (0..<vocabulary).sorted { weights[$0] > weights[$1] || (weights[$0] == weights[$1] && $0 < $1) }
        var cumulative = 0.0
        var prefix = Set<Int32>()
        for i in order {
            prefix.insert(Int32(i))
            cumulative += weights[i]
            if cumulative >= Double(topP) * total { break }
        }
        var sampler = try Self.sampler(SamplingParameters(temperature: 1, topK: 0, topP: topP, seed: 12), vocabulary: vocabulary)
        var seen = Set<Int32>()
        for _ in 0..<600 {
            var row = logits
            seen.insert(sampler.sample(logits: &row))
        }
        #expect(seen.isSubset(of: prefix))
        #expect(seen.count > prefix.count / 3)
    }

    @Test func rejectsBadParameters() {
        #expect(throws: InferenceError.self) { try Sampler(parameters: SamplingParameters(topP: 2), vocabularySize: 10) }
        #expect(throws: InferenceError.self) { try Sampler(parameters: SamplingParameters(), vocabularySize: 0) }
    }
}

@Suite("StopSequenceMatcher")
struct StopSequenceMatcherTests {
    @Test func stopSpanningPiecesIsCaughtAndNeverEmitted() {
        var matcher = StopSequenceMatcher(stops: ["world"])
        #expect(matcher.append("Hello ") == ("Hello ", false))
        #expect(matcher.append("wor") == ("", false))
        #expect(matcher.append("ld!") == ("", true))
        #expect(matcher.matchedStop == "world")
        #expect(matcher.append("more") == ("", true))
        #expect(matcher.finish() == "")
    }

    @Test func heldTextIsReleasedWhenItIsNotAStop() {
        var matcher = StopSequenceMatcher(stops: ["###"])
        #expect(matcher.append("a#") == ("a", false))
        #expect(matcher.append("#b") == ("##b", false))
        #expect(matcher.append("##") == ("", false))
        #expect(matcher.finish() == "##")
    }

    @Test func textBeforeTheStopInTheSamePieceIsKept() {
        var matcher = StopSequenceMatcher(stops: ["\n\n", "User:"])
        #expect(matcher.append("one two User: three\n\n") == ("one two ", true))
        #expect(matcher.matchedStop == "User:")
    }

    @Test func multiByteStops() {
        var matcher = StopSequenceMatcher(stops: ["終わり"])
        #expect(matcher.append("これで終") == ("これで", false))
        #expect(matcher.append("わ") == ("", false))
        #expect(matcher.append("り。") == ("", true))
    }

    @Test func noStopsPassesThrough() {
        var matcher = StopSequenceMatcher(stops: [])
        #expect(matcher.append("abc") == ("abc", false))
        #expect(matcher.finish() == "")
    }
}
