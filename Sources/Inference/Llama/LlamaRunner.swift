import Foundation

/// Runs forward passes of a `LlamaModel`: owns the scratch buffers (sized once for `maxRows`
/// token rows per step) and the thread pool. One step takes any mix of rows: several tokens of
/// one sequence's prompt, one token each of many sequences (batched decode), or both; every
/// weight matrix is read once per step for all rows.
///
/// Not thread-safe: one runner serves one caller at a time (the batch scheduler's thread).
public final class LlamaRunner: @unchecked Sendable {
    // @unchecked Sendable: used from one thread at a time (documented above); the parallel
    // regions inside `step` write disjoint slices of the scratch buffers and join before return.

    public let model: LlamaModel
    public let maxRows: Int
    public let pool: ThreadPool
    /// The matrix kernels of this runner's steps.
    public let kernels: KernelSet
    let c: LlamaConfiguration

    private let x: UnsafeMutablePointer<Float>         // residual stream, maxRows × dim
    private let normed: ActivationBatch                // dim
    private let attention: ActivationBatch             // dim (attention output, input of Wo)
    private let hidden: ActivationBatch                // ffn (SwiGLU output, input of Wdown)
    private let q: UnsafeMutablePointer<Float>         // maxRows × dim
    private let k: UnsafeMutablePointer<Float>         // maxRows × kvDim
    private let v: UnsafeMutablePointer<Float>
    private let projected: UnsafeMutablePointer<Float> // maxRows × dim (Wo and Wdown outputs)
    private let gate: UnsafeMutablePointer<Float>      // maxRows × ffn
    private let up: UnsafeMutablePointer<Float>
    private let ropeCos: UnsafeMutablePointer<Float>   // maxRows × ropeDim/2
    private let ropeSin: UnsafeMutablePointer<Float>
    private let inverseFrequency: [Float]
    private var scores: UnsafeMutablePointer<Float>    // maxRows × heads × scoreCapacity
    private var scoreCapacity = 0

    /// - Parameter kernels: int8 or float matrix kernels (default: `KernelSet.preferred`, i.e.
    ///   `LEVEE_KERNELS` or int8 where the CPU has AVX2/FMA); int8 falls back to float elsewhere.
    public init(model: LlamaModel, maxRows: Int = 64, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                kernels: KernelSet = .preferred) {
        self.model = model
        self.kernels = kernels.availableOrFloat
        self.maxRows = maxRows
        pool = ThreadPool(threads: threads)
        let c = model.configuration
        self.c = c
        func floats(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        x = floats(maxRows * c.dimension)
        normed = ActivationBatch(length: c.dimension, capacity: maxRows, kernels: self.kernels)
        attention = ActivationBatch(length: c.dimension, capacity: maxRows, kernels: self.kernels)
        hidden = ActivationBatch(length: c.feedForward, capacity: maxRows, kernels: self.kernels)
        q = floats(maxRows * c.dimension)
        k = floats(maxRows * c.kvDimension)
        v = floats(maxRows * c.kvDimension)
        projected = floats(maxRows * c.dimension)
        gate = floats(maxRows * c.feedForward)
        up = floats(maxRows * c.feedForward)
        ropeCos = floats(maxRows * c.ropeDimensions / 2)
        ropeSin = floats(maxRows * c.ropeDimensions / 2)
        inverseFrequency = (0..<c.ropeDimensions / 2).map { i in
            Float(pow(Double(c.ropeBase), -Double(2 * i) / Double(c.ropeDimensions)))
        }
        scores = floats(1)
    }

    deinit {
        pool.shutdown()
        for p in [x, q, k, v, projected, gate, up, ropeCos, ropeSin, scores] { p.deallocate() }
    }

    /// One token of one sequence in a step.
    public struct Row {
        public var token: Int
        public var cache: KVCache
        /// Whether this row's next-token logits are wanted (prompt rows other than the last are not).
        public var wantsLogits: Bool

        public init(token: Int, cache: KVCache, wantsLogits: Bool) {
            self.token = token
            self.cache = cache
            self.wantsLogits = wantsLogits
        }
    }

    /// Runs `rows` through the model. Each row goes at the next free position of its cache (rows
    /// of the same cache take consecutive positions in order). Writes the logits of the rows that
    /// want them, in order, to `logits` (vocabularySize floats each); returns how many.
    @discardableResult
    public func step(_ rows: [Row], logits: UnsafeMutablePointer<Float>) -> Int {
        let n = rows.count
        precondition(n > 0 && n <= maxRows, "a step takes 1...\(maxRows) rows, got \(n)")
        let dim = c.dimension, kvDim = c.kvDimension

        // Positions: each cache's next free slot, in row order.
        var positions = [Int](repeating: 0, count: n)
        var added: [ObjectIdentifier: Int] = [:]
        for (i, row) in rows.enumerated() {
            precondition(row.token >= 0 && row.token < c.vocabularySize, "token \(row.token) outside the vocabulary")
            let id = ObjectIdentifier(row.cache)
            let already = added[id, default: 0]
            positions[i] = row.cache.count + already
            added[id] = already + 1
        }
        for row in rows where added[ObjectIdentifier(row.cache)] != nil {
            let id = ObjectIdentifier(row.cache)
            row.cache.reserve(added[id]!)
            added[id] = nil
        }
        let longest = positions.max()! + 1
        ensureScoreCapacity(longest)

        for (i, row) in rows.enumerated() {
            model.embedding.dequantizeRow(row.token, into: x + i * dim)
            let half = c.ropeDimensions / 2
            for j in 0..<half {
                let angle = Float(positions[i]) * inverseFrequency[j]
                ropeCos[i * half + j] = cos(angle)
                ropeSin[i * half + j] = sin(angle)
            }
        }
        normed.count = n; attention.count = n; hidden.count = n

        for (l, layer) in model.layers.enumerated() {
            // Attention block.
            rmsNorm(rows: n, weight: layer.attentionNorm, into: normed)
            pool.multiply([MatMulTask(layer.q, normed, into: q, outStride: dim),
                           MatMulTask(layer.k, normed, into: k, outStride: kvDim),
                           MatMulTask(layer.v, normed, into: v, outStride: kvDim)])
            for i in 0..<n {
                rope(q + i * dim, heads: c.heads, row: i)
                rope(k + i * kvDim, heads: c.kvHeads, row: i)
                let cache = rows[i].cache
                (cache.keys[l] + positions[i] * kvDim).update(from: k + i * kvDim, count: kvDim)
                (cache.values[l] + positions[i] * kvDim).update(from: v + i * kvDim, count: kvDim)
            }
            attend(rows: rows, positions: positions, layer: l)
            attention.prepare()
            pool.multiply([MatMulTask(layer.o, attention, into: projected, outStride: dim)])
            addResidual(rows: n)

            // Feed-forward block (SwiGLU).
            rmsNorm(rows: n, weight: layer.ffnNorm, into: normed)
            pool.multiply([MatMulTask(layer.gate, normed, into: gate, outStride: c.feedForward),
                           MatMulTask(layer.up, normed, into: up, outStride: c.feedForward)])
            swiGLU(rows: n)
            hidden.prepare()
            pool.multiply([MatMulTask(layer.down, hidden, into: projected, outStride: dim)])
            addResidual(rows: n)
        }
        for row in rows { row.cache.count += 1 }

        // Final norm and the output projection, only for rows that want logits.
        var m = 0
        for (i, row) in rows.enumerated() where row.wantsLogits {
            (x + m * dim).update(from: x + i * dim, count: dim)
            m += 1
        }
        guard m > 0 else { return 0 }
        normed.count = m
        rmsNorm(rows: m, weight: model.outputNorm, into: normed)
        pool.multiply([MatMulTask(model.output, normed, into: logits, outStride: c.vocabularySize)])
        return m
    }

    // MARK: Pieces of the forward pass

    /// out = x / sqrt(mean(x²) + ε) · weight, then prepared for the next matmul.
    private func rmsNorm(rows: Int, weight: UnsafePointer<Float>, into out: ActivationBatch) {
        let dim = c.dimension
        for i in 0..<rows {
            let xi = x + i * dim
            var ss = SIMD8<Float>()
            for j in stride(from: 0, to: dim, by: 8) {
                let a = UnsafeRawPointer(xi + j).loadUnaligned(as: SIMD8<Float>.self)
                ss.addProduct(a, a)
            }
            let scale = 1 / (ss.sum() / Float(dim) + c.normEpsilon).squareRoot()
            let o = out.vector(i)
            for j in 0..<dim { o[j] = xi[j] * scale * weight[j] }
        }
        out.prepare()
    }

    /// Rotates adjacent pairs (x[2j], x[2j+1]) of each head's first `ropeDimensions` values by
    /// position·θ_j (the GGUF converter already permuted Q/K weights for this pairing).
    private func rope(_ p: UnsafeMutablePointer<Float>, heads: Int, row: Int) {
        let half = c.ropeDimensions / 2
        let cs = ropeCos + row * half, sn = ropeSin + row * half
        for h in 0..<heads {
            let base = p + h * c.headDimension
            for j in 0..<half {
                let a = base[2 * j], b = base[2 * j + 1]
                base[2 * j] = a * cs[j] - b * sn[j]
                base[2 * j + 1] = a * sn[j] + b * cs[j]
            }
        }
    }

    private func ensureScoreCapacity(_ length: Int) {
        guard length > scoreCapacity else { return }
        var capacity = max(256, scoreCapacity)
        while capacity < length { capacity *= 2 }
        scores.deallocate()
        scores = .allocate(capacity: maxRows * c.heads * capacity)
        scoreCapacity = capacity
    }

    /// Causal grouped-query attention: row i, head h attends over positions 0…positions[i] of its
    /// own cache, with key/value head h / (heads / kvHeads). Parallel over (row, head).
    private func attend(rows: [Row], positions: [Int], layer: Int) {
        let heads = c.heads, hd = c.headDimension, kvDim = c.kvDimension, dim = c.dimension
        let group = heads / c.kvHeads
        let scale = 1 / Float(hd).squareRoot()
        let caches = rows.map { (keys: UnsafePointer($0.cache.keys[layer]), values: UnsafePointer($0.cache.values[layer])) }
        let shared = UnsafeSendable((caches, positions, q, scores, scoreCapacity, attention.floats))
        pool.parallelFor(rows.count * heads) { task in
            let (caches, positions, q, scores, scoreCapacity, out) = shared.value
            let i = task / heads, h = task % heads
            let length = positions[i] + 1
            let query = UnsafeRawPointer(q + i * dim + h * hd)
            let kvOffset = (h / group) * hd
            let s = scores + task * scoreCapacity
            let keys = caches[i].keys, values = caches[i].values
            var maxScore = -Float.infinity
            for t in 0..<length {
                let key = UnsafeRawPointer(keys + t * kvDim + kvOffset)
                var acc = SIMD8<Float>()
                for j in stride(from: 0, to: hd, by: 8) {
                    acc.addProduct(query.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self),
                                   key.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self))
                }
                let score = acc.sum() * scale
                s[t] = score
                maxScore = max(maxScore, score)
            }
            var total: Float = 0
            for t in 0..<length {
                let e = exp(s[t] - maxScore)
                s[t] = e
                total += e
            }
            let o = out + i * dim + h * hd
            let inv = 1 / total
            if hd % 8 == 0 {
                // Eight outputs at a time held in a register over all positions: the same products
                // and sums in the same order as the scalar loop below (bit-identical), without a
                // load and store of the output per position.
                for j in stride(from: 0, to: hd, by: 8) {
                    var acc = SIMD8<Float>()
                    for t in 0..<length {
                        let value = UnsafeRawPointer(values + t * kvDim + kvOffset + j)
                        acc += SIMD8(repeating: s[t] * inv) * value.loadUnaligned(as: SIMD8<Float>.self)
                    }
                    UnsafeMutableRawPointer(o + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                }
            } else {
                o.initialize(repeating: 0, count: hd)
                for t in 0..<length {
                    let w = s[t] * inv
                    let value = values + t * kvDim + kvOffset
                    for j in 0..<hd { o[j] += w * value[j] }
                }
            }
        }
    }

    private func addResidual(rows: Int) {
        let count = rows * c.dimension
        for j in 0..<count { x[j] += projected[j] }
    }

    /// hidden = silu(gate) · up.
    private func swiGLU(rows: Int) {
        let f = c.feedForward
        for i in 0..<rows {
            let g = gate + i * f, u = up + i * f, h = hidden.vector(i)
            for j in 0..<f {
                let a = g[j]
                h[j] = a / (1 + exp(-a)) * u[j]
            }
        }
    }
}
