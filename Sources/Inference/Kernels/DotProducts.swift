/// Row kernels: one weight row dotted with 1, 2 or 4 activation vectors, reading and decoding
/// each weight block once for all of them. Batching is where the bandwidth goes: with 4 vectors
/// each byte of weights fetched from memory feeds 4 dot products.
///
/// All three accumulate in the same order with the same fused operations, so a vector's result
/// does not depend on how many others share the step: batched decoding gives bit-identical
/// logits to single-stream decoding.
enum RowKernels {
    /// One activation vector: its floats and block sums.
    struct Vector {
        var x: UnsafeRawPointer
        var sums: UnsafePointer<Float>

        @inline(__always)
        init(_ batch: ActivationBatch, _ v: Int) {
            x = UnsafeRawPointer(batch.floats + v * batch.length)
            sums = UnsafePointer(batch.blockSums + v * batch.blocks)
        }

        /// Σ q·x over block i (before the block's scale).
        @inline(__always)
        func block(_ i: Int, _ w: (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, d: Float, m: Float)) -> SIMD8<Float> {
            let p = x + i * 128
            var b = w.0 * p.loadUnaligned(as: SIMD8<Float>.self)
            b.addProduct(w.1, p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
            b.addProduct(w.2, p.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self))
            b.addProduct(w.3, p.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self))
            return b
        }
    }

    @inline(__always)
    static func dot1<B: QuantizedBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector) -> Float {
        var acc = SIMD8<Float>()
        var minTerm: Float = 0
        for i in 0..<blocks {
            let w = B.decode(row + i * B.bytes)
            acc.addProduct(a.block(i, w), SIMD8(repeating: w.d))
            if B.hasMinimum { minTerm.addProduct(w.m, a.sums[i]) }
        }
        return acc.sum() + minTerm
    }

    @inline(__always)
    static func dot2<B: QuantizedBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector, _ b: Vector) -> (Float, Float) {
        var accA = SIMD8<Float>(), accB = SIMD8<Float>()
        var minA: Float = 0, minB: Float = 0
        for i in 0..<blocks {
            let w = B.decode(row + i * B.bytes)
            let d = SIMD8(repeating: w.d)
            accA.addProduct(a.block(i, w), d)
            accB.addProduct(b.block(i, w), d)
            if B.hasMinimum {
                minA.addProduct(w.m, a.sums[i])
                minB.addProduct(w.m, b.sums[i])
            }
        }
        return (accA.sum() + minA, accB.sum() + minB)
    }

    @inline(__always)
    static func dot4<B: QuantizedBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int,
                                        _ a: Vector, _ b: Vector, _ c: Vector, _ e: Vector) -> SIMD4<Float> {
        var accA = SIMD8<Float>(), accB = SIMD8<Float>(), accC = SIMD8<Float>(), accE = SIMD8<Float>()
        var mins = SIMD4<Float>()
        for i in 0..<blocks {
            let w = B.decode(row + i * B.bytes)
            let d = SIMD8(repeating: w.d)
            accA.addProduct(a.block(i, w), d)
            accB.addProduct(b.block(i, w), d)
            accC.addProduct(c.block(i, w), d)
            accE.addProduct(e.block(i, w), d)
            if B.hasMinimum {
                mins.addProduct(SIMD4(a.sums[i], b.sums[i], c.sums[i], e.sums[i]), SIMD4(repeating: w.m))
            }
        }
        return SIMD4(accA.sum(), accB.sum(), accC.sum(), accE.sum()) + mins
    }

    /// Float rows (F32 weights) against float activations.
    @inline(__always)
    static func dotF32(_ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        let wr = UnsafeRawPointer(w), xr = UnsafeRawPointer(x)
        var i = 0
        while i + 16 <= count {
            acc0.addProduct(wr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self),
                            xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
            acc1.addProduct(wr.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self),
                            xr.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self))
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < count { s += w[i] * x[i]; i += 1 }
        return s
    }
}
