import Foundation

/// Picks the next token from a row of logits: repetition penalty over the recent history, then
/// greedy (temperature 0) or temperature softmax restricted by top-k and top-p, drawn with a
/// seeded xoshiro256** generator so the same seed and logits give the same tokens.
///
/// All scratch memory is allocated once in `init` (sized to the vocabulary), so sampling a token
/// allocates nothing. Top-k uses a bounded min-heap (O(n log k), and most logits fail the first
/// comparison); top-p without top-k buckets the probabilities instead of sorting the vocabulary;
/// exponentials over the whole vocabulary are computed eight lanes at a time.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    public let vocabularySize: Int
    /// The seed in use (the given one, or the one drawn when none was given); log it to replay a run.
    public let seed: UInt64

    private var generator: SeededGenerator
    private var heapLogits: [Float]
    private var heapIndices: [Int32]
    private var weights: [Float]
    private var bucketMass: [Float]
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
        bucketMass = [Float](repeating: 0, count: Self.nucleusBuckets)
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
        if k < n { return sampleTopK(UnsafeBufferPointer(logits), k: k) }
        if parameters.topP >= 1 { return sampleFullSoftmax(UnsafeBufferPointer(logits)) }
        return sampleNucleus(UnsafeBufferPointer(logits))
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
        let maximum = Self.maximum(logits)
        for i in 0..<logits.count where logits[i] == maximum { return Int32(i) }
        return 0 // only NaNs
    }

    /// The largest value, sixteen lanes at a time. (Compare-and-blend: the standard library's
    /// `pointwiseMax` is not vectorised and was 20x slower here.)
    @inline(__always)
    static func maximum(_ values: UnsafeBufferPointer<Float>) -> Float {
        let n = values.count
        guard let base = values.baseAddress else { return -.infinity }
        let raw = UnsafeRawPointer(base)
        var lanes = SIMD16<Float>(repeating: -.infinity)
        var i = 0
        while i + 16 <= n {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            lanes = lanes.replacing(with: v, where: v .> lanes)
            i += 16
        }
        var result = -Float.infinity
        for lane in 0..<16 where lanes[lane] > result { result = lanes[lane] }
        while i < n { if values[i] > result { result = values[i] }; i += 1 }
        return result
    }

    /// `weights[i] = exp((logits[i] - maximum) * scale)` for all i; returns their sum.
    @inline(__always)
    static func exponentials(_ logits: UnsafeBufferPointer<Float>, maximum: Float, scale: Float,
                             into weights: UnsafeMutableBufferPointer<Float>) -> Float {
        let n = logits.count
        let source = logits.baseAddress!, target = UnsafeMutableRawPointer(weights.baseAddress!)
        var sums = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= n {
            let x = (UnsafeRawPointer(source + i).loadUnaligned(as: SIMD8<Float>.self) - maximum) * scale
            let e = fastExp(x)
            target.storeBytes(of: e, toByteOffset: i * 4, as: SIMD8<Float>.self)
            sums += e
            i += 8
        }
        var total = sums.sum()
        while i < n {
            let e = fastExp(SIMD8<Float>(repeating: (logits[i] - maximum) * scale))[0]
            weights[i] = e
            total += e
            i += 1
        }
        return total
    }

    /// e^x for x ≤ 0, eight lanes at once: 2^(x·log2 e) split into an integer power (put in the
    /// exponent bits) and a fraction in [0, 1] (degree-7 polynomial). Relative error under 2e-6
    /// near 0, about 5e-6 near -87 where rounding x·log2 e dominates; far below -87 the result is 0.
    /// Floor and float→int use the 1.5·2^23 rounding trick because the standard library's
    /// `rounded(.down)` and SIMD conversions are not vectorised (40x slower than this).
    @inline(__always)
    static func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let lowest = SIMD8<Float>(repeating: -87)
        let y = x.replacing(with: lowest, where: x .< lowest) * 1.442_695_04
        let magic = SIMD8<Float>(repeating: 12_582_912) // 1.5·2^23: adding it rounds to an integer
        let shifted = (y - 0.5) + magic                  // round(y - 0.5) = floor(y), or floor(y) - 1 at integers
        let whole = shifted - magic
        let f = y - whole                                // in [0, 1]
        var p = SIMD8<Float>(repeating: 1.525_273_4e-5)
        p = p * f + 1.540_353_0e-4
        p = p * f + 1.333_355_8e-3
        p = p * f + 9.618_129_1e-3
        p = p * f + 5.550_410_9e-2
        p = p * f + 0.240_226_5
        p = p * f + 0.693_147_18
        p = p * f + 1
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 // the integer `whole`
        let scaled = p * unsafeBitCast((integer &+ 127) &<< 23, to: SIMD8<Float>.self)
        return scaled.replacing(with: 0, where: x .< lowest)
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
        let maximum = Self.maximum(logits)
        let inverseTemperature = 1 / parameters.temperature
        let draw = generator.nextUnit()
        return weights.withUnsafeMutableBufferPointer { w -> Int32 in
            let total = Self.exponentials(logits, maximum: maximum, scale: inverseTemperature, into: w)
            let target = Float(draw) * total
            // Skip whole blocks of 8 by their sum, then walk the block that crosses the target.
            var cumulative: Float = 0
            var i = 0
            let raw = UnsafeRawPointer(w.baseAddress!)
            while i + 8 <= n {
                let blockSum = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self).sum()
                if cumulative + blockSum > target { break }
                cumulative += blockSum
                i += 8
            }
            var last = -1
            while i < n {
                if w[i] > 0 {
                    cumulative += w[i]
                    last = i
                    if cumulative > target { return Int32(i) }
                }
                i += 1
            }
            // Rounding left the target just above the sum: take the last token with weight.
            if last >= 0 { return Int32(last) }
            var j = n - 1
            while j > 0 && w[j] <= 0 { j -= 1 }
            return Int32(j)
        }
    }

    /// Top-p over the whole vocabulary without sorting it: weights are bucketed by how far their
    /// logit is below the maximum (32 buckets per unit of scaled logit), bucket masses locate the
    /// bucket where the cumulative mass reaches `topP`, and only that bucket is ordered (an
    /// in-place heap, popped until the mass is reached). The kept set is exactly the sorted
    /// prefix: every token in an earlier bucket outranks every token in a later one.
    private mutating func sampleNucleus(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        let n = logits.count
        let maximum = Self.maximum(logits)
        let scale = 1 / parameters.temperature
        let draw = generator.nextUnit()
        let bucketCount = Self.nucleusBuckets
        return weights.withUnsafeMutableBufferPointer { w -> Int32 in
            bucketMass.withUnsafeMutableBufferPointer { mass -> Int32 in
                heapIndices.withUnsafeMutableBufferPointer { order -> Int32 in
                    let total = Self.exponentials(logits, maximum: maximum, scale: scale, into: w)
                    @inline(__always) func bucket(_ i: Int) -> Int {
                        let distance = (maximum - logits[i]) * scale * 32
                        return distance < Float(bucketCount - 1) ? Int(distance) : bucketCount - 1
                    }
                    for b in 0..<bucketCount { mass[b] = 0 }
                    for i in 0..<n { mass[bucket(i)] += w[i] }
                    let wanted = parameters.topP * total
                    var before: Float = 0
                    var cut = bucketCount - 1
                    for b in 0..<bucketCount {
                        if before + mass[b] >= wanted { cut = b; break }
                        before += mass[b]
                    }
                    // Tokens of earlier buckets go to the front of `order`, the cut bucket's to the back.
                    var kept = 0
                    var tail = n
                    for i in 0..<n {
                        let b = bucket(i)
                        if b < cut { order[kept] = Int32(i); kept += 1 }
                        else if b == cut { tail -= 1; order[tail] = Int32(i) }
                    }
                    // Pop the cut bucket's best tokens (highest logit, lower id on ties) until the
                    // nucleus has its mass; each popped token joins the kept prefix.
                    let region = UnsafeMutableBufferPointer(rebasing: order[tail..<n])
                    Self.heapify(region, logits)
                    var size = region.count
                    var cumulative = before
                    while size > 0 && (kept == 0 || cumulative < wanted) {
                        let best = Self.popBest(region, &size, logits)
                        order[kept] = best
                        kept += 1
                        cumulative += w[Int(best)]
                    }
                    var keptMass: Float = 0
                    for j in 0..<kept { keptMass += w[Int(order[j])] }
                    let target = Float(draw) * keptMass
                    var running: Float = 0
                    for j in 0..<kept {
                        running += w[Int(order[j])]
                        if running > target { return order[j] }
                    }
                    return order[kept - 1]
                }
            }
        }
    }

    static let nucleusBuckets = 1024

    /// Max-heap of token ids ordered by logit (lower id first on ties).
    @inline(__always)
    private static func ranksAbove(_ a: Int32, _ b: Int32, _ logits: UnsafeBufferPointer<Float>) -> Bool {
        less(logits[Int(b)], b, logits[Int(a)], a)
    }

    private static func heapify(_ heap: UnsafeMutableBufferPointer<Int32>, _ logits: UnsafeBufferPointer<Float>) {
        var start = heap.count / 2 - 1
        while start >= 0 {
            siftDownBest(heap, start, heap.count, logits)
            start -= 1
        }
    }

    private static func popBest(_ heap: UnsafeMutableBufferPointer<Int32>, _ size: inout Int, _ logits: UnsafeBufferPointer<Float>) -> Int32 {
        let best = heap[0]
        size -= 1
        heap[0] = heap[size]
        siftDownBest(heap, 0, size, logits)
        return best
    }

    private static func siftDownBest(_ heap: UnsafeMutableBufferPointer<Int32>, _ start: Int, _ size: Int, _ logits: UnsafeBufferPointer<Float>) {
        var parent = start
        let item = heap[parent]
        while true {
            var child = 2 * parent + 1
            if child >= size { break }
            if child + 1 < size && ranksAbove(heap[child + 1], heap[child], logits) { child += 1 }
            if !ranksAbove(heap[child], item, logits) { break }
            heap[parent] = heap[child]
            parent = child
        }
        heap[parent] = item
    }

    /// Top-k (then top-p over the renormalised k) with a bounded min-heap selection.
    private mutating func sampleTopK(_ logits: UnsafeBufferPointer<Float>, k: Int) -> Int32 {
        let inverseTemperature = 1 / parameters.temperature
        let topP = parameters.topP
        let draw = generator.nextUnit()
        selectTop(k, of: logits)
        return heapLogits.withUnsafeBufferPointer { hl in
            heapIndices.withUnsafeBufferPointer { hi in
                weights.withUnsafeMutableBufferPointer { w -> Int32 in
                    let best = hl[0]
                    var mass: Float = 0
                    for j in 0..<k {
                        let e = expf((hl[j] - best) * inverseTemperature)
                        w[j] = e
                        mass += e
                    }
                    var kept = k
                    if topP < 1 {
                        let wanted = topP * mass
                        var cumulative: Float = 0
                        for j in 0..<k {
                            cumulative += w[j]
                            if cumulative >= wanted { kept = j + 1; break }
                        }
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
    }

    /// Puts the `m` largest logits, in descending order, at the front of `heapLogits`/`heapIndices`.
    private mutating func selectTop(_ m: Int, of logits: UnsafeBufferPointer<Float>) {
        heapLogits.withUnsafeMutableBufferPointer { hl in
            heapIndices.withUnsafeMutableBufferPointer { hi in
                // Min-heap of the best m seen so far; the root is the weakest kept candidate.
                var count = 0
                let n = logits.count
                let raw = UnsafeRawPointer(logits.baseAddress!)
                var i = 0
                while i < n {
                    // Once the heap is full, most blocks of 16 hold nothing above its weakest entry:
                    // test them with one vector compare. (A later equal logit never displaces the
                    // root, which has a lower id, so "greater" is the exact test.)
                    if count == m && i + 16 <= n && i & 15 == 0 {
                        let block = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                        if !any(block .> SIMD16<Float>(repeating: hl[0])) { i += 16; continue }
                    }
                    let value = logits[i]
                    defer { i += 1 }
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
