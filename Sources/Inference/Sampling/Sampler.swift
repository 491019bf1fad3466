import Foundation

/// Picks the next token from a row of logits: repetition penalty over the recent history, then
/// greedy (temperature 0) or temperature softmax restricted by top-k and top-p, drawn with a
/// seeded xoshiro256** generator so the same seed and logits give the same tokens.
///
/// All scratch memory is allocated once in `init` (sized to the vocabulary), so sampling a token
/// allocates nothing. Top-k uses a bounded min-heap (O(n log k), and most logits fail the first
/// comparison); top-p without top-k first tries the 64 best candidates and widens only when the
/// nucleus is larger, so a peaked distribution never pays for a full sort.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    public let vocabularySize: Int
    /// The seed in use (the given one, or the one drawn when none was given); log it to replay a run.
    public let seed: UInt64

    private var generator: SeededGenerator
    private var heapLogits: [Float]
    private var heapIndices: [Int32]
    private var weights: [Float]
    private var seenStamps: [UInt32]
    private var stamp: UInt32 = 0

    /// Throws `InferenceError.invalidRequest` when the parameters are out of range.
    public init(parameters: SamplingParameters, vocabularySize: Int) throws(InferenceError) {
        try parameters.validate()
        guard vocabularySize > 0, vocabularySize <= Int(Int32.max) else {
            throw .invalidRequest("vocabulary size must be positive, got \(vocabularySize)")
        }
        self.parameters = parameters
        self.vocabularySize = vocabularySize
        var system = SystemRandomNumberGenerator()
        self.seed = parameters.seed ?? system.next()
        self.generator = SeededGenerator(seed: seed)
        heapLogits = [Float](repeating: 0, count: vocabularySize)
        heapIndices = [Int32](repeating: 0, count: vocabularySize)
        weights = [Float](repeating: 0, count: vocabularySize)
        seenStamps = parameters.repetitionPenalty != 1 ? [UInt32](repeating: 0, count: vocabularySize) : []
    }

    /// Samples from `logits` (one value per vocabulary entry). `history` is the sequence so far
    /// (prompt and generated tokens); only its last `repetitionWindow` tokens are penalised.
    /// The logits are modified in place (penalty applied); pass a copy if you need them after.
    public mutating func sample(logits: UnsafeMutableBufferPointer<Float>, history: UnsafeBufferPointer<Int32>) -> Int32 {
        precondition(logits.count == vocabularySize, "logits have \(logits.count) entries, vocabulary has \(vocabularySize)")
        if parameters.repetitionPenalty != 1, parameters.repetitionWindow > 0, !history.isEmpty {
            applyRepetitionPenalty(logits, history: history)
        }
        if parameters.temperature == 0 { return Self.argmax(UnsafeBufferPointer(logits)) }

        let n = logits.count
        let k = parameters.topK > 0 ? min(parameters.topK, n) : n
        if k == n && parameters.topP >= 1 { return sampleFullSoftmax(UnsafeBufferPointer(logits)) }
        return sampleTruncated(UnsafeBufferPointer(logits), k: k)
    }

    /// Convenience for arrays (tests, tools); same result as the pointer form.
    public mutating func sample(logits: inout [Float], history: [Int32] = []) -> Int32 {
        history.withUnsafeBufferPointer { h in
            logits.withUnsafeMutableBufferPointer { sample(logits: $0, history: h) }
        }
    }

    /// Index of the largest logit (the first one on ties).
    @inline(__always)
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return Int32(best)
    }

    // MARK: - Steps

    private mutating func applyRepetitionPenalty(_ logits: UnsafeMutableBufferPointer<Float>, history: UnsafeBufferPointer<Int32>) {
        // Each distinct token is penalised once, however often it occurs: a stamp per vocabulary
        // entry marks the ones already done this call without clearing a set every token.
        stamp &+= 1
        if stamp == 0 {
            for i in seenStamps.indices { seenStamps[i] = 0 }
            stamp = 1
        }
        let penalty = parameters.repetitionPenalty
        let start = max(0, history.count - parameters.repetitionWindow)
        let current = stamp
        seenStamps.withUnsafeMutableBufferPointer { seen in
            for position in start..<history.count {
                let token = Int(history[position])
                guard token >= 0, token < logits.count, seen[token] != current else { continue }
                seen[token] = current
                let value = logits[token]
                logits[token] = value > 0 ? value / penalty : value * penalty
            }
        }
    }

    private mutating func sampleFullSoftmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        let n = logits.count
        var maximum = -Float.infinity
        for i in 0..<n where logits[i] > maximum { maximum = logits[i] }
        let inverseTemperature = 1 / parameters.temperature
        let draw = generator.nextUnit()
        return weights.withUnsafeMutableBufferPointer { w -> Int32 in
            var total: Float = 0
            for i in 0..<n {
                let e = expf((logits[i] - maximum) * inverseTemperature)
                w[i] = e
                total += e
            }
            let target = Float(draw) * total
            var cumulative: Float = 0
            var last = 0
            for i in 0..<n where w[i] > 0 {
                cumulative += w[i]
                last = i
                if cumulative > target { return Int32(i) }
            }
            return Int32(last) // rounding left the target just above the sum
        }
    }

    private mutating func sampleTruncated(_ logits: UnsafeBufferPointer<Float>, k: Int) -> Int32 {
        let n = logits.count
        let inverseTemperature = 1 / parameters.temperature
        let topP = parameters.topP
        let draw = generator.nextUnit()
        // Without top-k the nucleus is measured against the mass of the whole vocabulary.
        var fullMass: Float = 0
        if k == n {
            var maximum = -Float.infinity
            for i in 0..<n where logits[i] > maximum { maximum = logits[i] }
            for i in 0..<n { fullMass += expf((logits[i] - maximum) * inverseTemperature) }
        }
        var candidates = k < n ? k : min(64, n)
        while true {
            selectTop(candidates, of: logits)
            let chosen: Int32? = heapLogits.withUnsafeBufferPointer { hl in
                heapIndices.withUnsafeBufferPointer { hi in
                    weights.withUnsafeMutableBufferPointer { w -> Int32? in
                        let best = hl[0]
                        var mass: Float = 0
                        for j in 0..<candidates {
                            let e = expf((hl[j] - best) * inverseTemperature)
                            w[j] = e
                            mass += e
                        }
                        // With top-k the probabilities are renormalised over the k kept tokens.
                        let reference = k < n ? mass : fullMass
                        let wanted = topP * reference
                        var kept = candidates
                        if topP < 1 {
                            var cumulative: Float = 0
                            var cut = -1
                            for j in 0..<candidates {
                                cumulative += w[j]
                                if cumulative >= wanted { cut = j + 1; break }
                            }
                            if cut < 0 {
                                if candidates < n && k == n { return nil } // nucleus is wider: look further
                                cut = candidates
                            }
                            kept = cut
                        }
                        var keptMass: Float = 0
                        for j in 0..<kept { keptMass += w[j] }
                        let target = Float(draw) * keptMass
                        var cumulative: Float = 0
                        for j in 0..<kept {
                            cumulative += w[j]
                            if cumulative > target { return hi[j] }
                        }
                        return hi[kept - 1]
                    }
                }
            }
            if let chosen { return chosen }
            candidates = min(candidates * 4, n)
        }
    }

    /// Puts the `m` largest logits, in descending order, at the front of `heapLogits`/`heapIndices`.
    private mutating func selectTop(_ m: Int, of logits: UnsafeBufferPointer<Float>) {
        heapLogits.withUnsafeMutableBufferPointer { hl in
            heapIndices.withUnsafeMutableBufferPointer { hi in
                // Min-heap of the best m seen so far; the root is the weakest kept candidate.
                var count = 0
                for i in 0..<logits.count {
                    let value = logits[i]
                    if count < m {
                        var child = count
                        count += 1
                        while child > 0 {
                            let parent = (child - 1) / 2
                            if !Self.less(value, Int32(i), hl[parent], hi[parent]) { break }
                            hl[child] = hl[parent]; hi[child] = hi[parent]
                            child = parent
                        }
                        hl[child] = value; hi[child] = Int32(i)
                    } else if Self.less(hl[0], hi[0], value, Int32(i)) {
                        Self.siftDown(hl, hi, value: value, index: Int32(i), count: count)
                    }
                }
                // Heap sort: repeatedly move the minimum to the end, leaving a descending order.
                var end = count - 1
                while end > 0 {
                    let value = hl[end], index = hi[end]
                    hl[end] = hl[0]; hi[end] = hi[0]
                    Self.siftDown(hl, hi, value: value, index: index, count: end)
                    end -= 1
                }
            }
        }
    }

    /// Candidate order: by logit, and on equal logits the lower token id ranks higher.
    @inline(__always)
    private static func less(_ a: Float, _ ai: Int32, _ b: Float, _ bi: Int32) -> Bool {
        a < b || (a == b && ai > bi)
    }

    @inline(__always)
    private static func siftDown(_ hl: UnsafeMutableBufferPointer<Float>, _ hi: UnsafeMutableBufferPointer<Int32>,
                                 value: Float, index: Int32, count: Int) {
        var parent = 0
        while true {
            var child = 2 * parent + 1
            if child >= count { break }
            if child + 1 < count && less(hl[child + 1], hi[child + 1], hl[child], hi[child]) { child += 1 }
            if !less(hl[child], hi[child], value, index) { break }
            hl[parent] = hl[child]; hi[parent] = hi[child]
            parent = child
        }
        hl[parent] = value; hi[parent] = index
    }
}
