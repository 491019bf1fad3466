#if arch(x86_64)
import _Builtin_intrinsics.intel

// The int8 matrix kernels (`KernelSet.int8`), written with Clang's x86 intrinsics imported as a
// module (`__m256i` is `SIMD4<Int64>`, `__m256` is `SIMD8<Float>` in Swift). The Inference
// target is compiled with `-target-cpu haswell`; `KernelSet.int8Supported` checks the CPU at run
// time before a runner picks these.
//
// Per 32-value block: the weights' integers times the activation's int8 values with vpmaddubsw
// (u8 × s8 → pairs summed to s16) and vpmaddwd (pairs of s16 summed to s32), converted to float
// and scaled by d_w·d_x with one FMA; Q4_1's minimum adds m_w · Σx with the exact float sum.
// No s16 overflow: Q4_1 gives at most 2·15·127, Q8_0 (via |w| and sign-moved x) 2·128·127.

/// A GGUF weight block as the int8 kernels read it.
protocol Int8WeightBlock {
    /// Bytes per 32-value block.
    static var bytes: Int { get }
    /// Whether blocks carry a minimum (value = d·q + m).
    static var hasMinimum: Bool { get }
    /// The block's 32 integers in element order, scale and minimum.
    static func load(_ p: UnsafeRawPointer) -> (q: __m256i, d: Float, m: Float)
    /// Σ w·x of 32 integer pairs as eight int32 partial sums.
    static func dot(_ w: __m256i, _ x: __m256i) -> __m256i
}

/// Q4_1: byte i holds element i (low nibble) and element 16+i (high nibble); q ∈ 0…15 unsigned.
enum Q4_1Int8: Int8WeightBlock {
    static let bytes = 20
    static let hasMinimum = true

    @inline(__always)
    static func load(_ p: UnsafeRawPointer) -> (q: __m256i, d: Float, m: Float) {
        let packed = p.loadUnaligned(fromByteOffset: 4, as: __m128i.self)
        let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F))
        return (q, Float(p.loadUnaligned(as: Float16.self)), Float(p.loadUnaligned(fromByteOffset: 2, as: Float16.self)))
    }

    @inline(__always)
    static func dot(_ w: __m256i, _ x: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    }
}

/// Q8_0: f16 scale, 32 signed bytes. vpmaddubsw wants one unsigned operand: |w| against x with
/// w's sign moved onto it.
enum Q8_0Int8: Int8WeightBlock {
    static let bytes = 34
    static let hasMinimum = false

    @inline(__always)
    static func load(_ p: UnsafeRawPointer) -> (q: __m256i, d: Float, m: Float) {
        (p.loadUnaligned(fromByteOffset: 2, as: __m256i.self), Float(p.loadUnaligned(as: Float16.self)), 0)
    }

    @inline(__always)
    static func dot(_ w: __m256i, _ x: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1))
    }
}

enum Int8Kernels {
    /// Quantizes the batch's first `count` vectors block by block (and computes the float block
    /// sums the Q4_1 minimum term uses).
    static func quantize(_ batch: ActivationBatch) {
        let blocks = batch.blocks
        let signBit = _mm256_set1_ps(-0.0)
        // vpackssdw/vpacksswb work within 128-bit lanes; this puts the 4-byte groups back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)
        for v in 0..<batch.count {
            let x = UnsafeRawPointer(batch.floats + v * batch.length)
            let q = UnsafeMutableRawPointer(batch.quants + v * batch.length)
            for b in 0..<blocks {
                let p = x + b * 128
                let f0 = p.loadUnaligned(as: __m256.self), f1 = p.loadUnaligned(fromByteOffset: 32, as: __m256.self)
                let f2 = p.loadUnaligned(fromByteOffset: 64, as: __m256.self), f3 = p.loadUnaligned(fromByteOffset: 96, as: __m256.self)
                batch.blockSums[v * blocks + b] = (f0 + f1 + f2 + f3).sum()
                let a8 = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signBit, f0), _mm256_andnot_ps(signBit, f1)),
                                       _mm256_max_ps(_mm256_andnot_ps(signBit, f2), _mm256_andnot_ps(signBit, f3)))
                var a4 = _mm_max_ps(a8.lowHalf, a8.highHalf)
                a4 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4))
                a4 = _mm_max_ps(a4, _mm_movehdup_ps(a4))
                let amax = a4[0]
                batch.scales[v * blocks + b] = amax / 127
                let inverse = _mm256_set1_ps(amax > 0 ? 127 / amax : 0)
                let i0 = _mm256_cvtps_epi32(_mm256_mul_ps(f0, inverse)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(f1, inverse))
                let i2 = _mm256_cvtps_epi32(_mm256_mul_ps(f2, inverse)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(f3, inverse))
                let bytes = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3))
                q.storeBytes(of: _mm256_permutevar8x32_epi32(bytes, order), toByteOffset: b * 32, as: __m256i.self)
            }
        }
    }

    /// One quantized activation vector.
    struct Vector {
        var q: UnsafeRawPointer
        var scales: UnsafePointer<Float>
        var sums: UnsafePointer<Float>

        @inline(__always)
        init(_ batch: ActivationBatch, _ v: Int) {
            q = UnsafeRawPointer(batch.quants + v * batch.length)
            scales = UnsafePointer(batch.scales + v * batch.blocks)
            sums = UnsafePointer(batch.blockSums + v * batch.blocks)
        }

        /// d_w·d_x·Σ w·x of block i added to `acc`.
        @inline(__always)
        func accumulate<B: Int8WeightBlock>(_: B.Type, _ i: Int, _ w: (q: __m256i, d: Float, m: Float), _ acc: __m256) -> __m256 {
            let products = _mm256_cvtepi32_ps(B.dot(w.q, q.loadUnaligned(fromByteOffset: i * 32, as: __m256i.self)))
            return _mm256_fmadd_ps(products, _mm256_set1_ps(w.d * scales[i]), acc)
        }
    }

    // Row kernels for 1, 2 or 4 vectors: each weight block is loaded and unpacked once for all of
    // them. A vector's arithmetic is the same in all three (same order, same fused operations),
    // so batched results are bit-identical to single-stream ones.

    @inline(__always)
    static func dot1<B: Int8WeightBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector) -> Float {
        var acc = _mm256_setzero_ps()
        var minTerm: Float = 0
        for i in 0..<blocks {
            let w = B.load(row + i * B.bytes)
            acc = a.accumulate(B.self, i, w, acc)
            if B.hasMinimum { minTerm.addProduct(w.m, a.sums[i]) }
        }
        return acc.sum() + minTerm
    }

    @inline(__always)
    static func dot2<B: Int8WeightBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector, _ b: Vector) -> (Float, Float) {
        var accA = _mm256_setzero_ps(), accB = _mm256_setzero_ps()
        var minA: Float = 0, minB: Float = 0
        for i in 0..<blocks {
            let w = B.load(row + i * B.bytes)
            accA = a.accumulate(B.self, i, w, accA)
            accB = b.accumulate(B.self, i, w, accB)
            if B.hasMinimum {
                minA.addProduct(w.m, a.sums[i])
                minB.addProduct(w.m, b.sums[i])
            }
        }
        return (accA.sum() + minA, accB.sum() + minB)
    }

    @inline(__always)
    static func dot4<B: Int8WeightBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int,
                                         _ a: Vector, _ b: Vector, _ c: Vector, _ e: Vector) -> SIMD4<Float> {
        var accA = _mm256_setzero_ps(), accB = _mm256_setzero_ps(), accC = _mm256_setzero_ps(), accE = _mm256_setzero_ps()
        var mins = SIMD4<Float>()
        for i in 0..<blocks {
            let w = B.load(row + i * B.bytes)
            accA = a.accumulate(B.self, i, w, accA)
            accB = b.accumulate(B.self, i, w, accB)
            accC = c.accumulate(B.self, i, w, accC)
            accE = e.accumulate(B.self, i, w, accE)
            if B.hasMinimum {
                mins.addProduct(SIMD4(a.sums[i], b.sums[i], c.sums[i], e.sums[i]), SIMD4(repeating: w.m))
            }
        }
        return SIMD4(accA.sum(), accB.sum(), accC.sum(), accE.sum()) + mins
    }

    /// Rows `range` of `W·x` for every vector of `x` (quantized by `prepare()`).
    @inline(__always)
    static func multiply<B: Int8WeightBlock>(_ block: B.Type, data: UnsafeRawPointer, rowBytes: Int, _ x: ActivationBatch,
                                             _ range: Range<Int>, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let blocks = x.blocks
        let n = x.count
        for r in range {
            let row = data + r * rowBytes
            var v = 0
            while v + 4 <= n {
                let s = dot4(block, row: row, blocks: blocks, .init(x, v), .init(x, v + 1), .init(x, v + 2), .init(x, v + 3))
                out[v * outStride + r] = s[0]
                out[(v + 1) * outStride + r] = s[1]
                out[(v + 2) * outStride + r] = s[2]
                out[(v + 3) * outStride + r] = s[3]
                v += 4
            }
            if v + 2 <= n {
                let s = dot2(block, row: row, blocks: blocks, .init(x, v), .init(x, v + 1))
                out[v * outStride + r] = s.0
                out[(v + 1) * outStride + r] = s.1
                v += 2
            }
            if v < n {
                out[v * outStride + r] = dot1(block, row: row, blocks: blocks, .init(x, v))
            }
        }
    }
}
#endif
