/// Row kernels: one weight row dotted with 1, 2 or 4 quantized activation vectors, reading and
/// decoding each weight block once for all of them. Batching is where the bandwidth goes: with 4
/// vectors each byte of weights fetched from memory feeds 4 dot products.
enum RowKernels {
    /// Pointers to one activation vector's blocks.
    struct Vector {
        var even: UnsafePointer<SIMD16<Int16>>
        var odd: UnsafePointer<SIMD16<Int16>>
        var scale: UnsafePointer<Float>
        var scaledSum: UnsafePointer<Float>

        @inline(__always)
        init(_ batch: ActivationBatch, _ v: Int) {
            let o = v * batch.blocks
            even = UnsafePointer(batch.even + o)
            odd = UnsafePointer(batch.odd + o)
            scale = UnsafePointer(batch.scale + o)
            scaledSum = UnsafePointer(batch.scaledSum + o)
        }
    }

    // All three kernels accumulate in the same order with the same fused operations, so a
    // vector's result does not depend on how many others share the step: batched decoding gives
    // bit-identical logits to single-stream decoding.

    @inline(__always)
    static func dot1<B: QuantizedBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector) -> Float {
        var acc = SIMD8<Float>()
        var minTerm: Float = 0
        for i in 0..<blocks {
            let w = B.decode(row + i * B.bytes)
            acc.addProduct(blockProducts(w.even, w.odd, a.even[i], a.odd[i]), SIMD8(repeating: w.d * a.scale[i]))
            if B.hasMinimum { minTerm.addProduct(w.m, a.scaledSum[i]) }
        }
        return acc.sum() + minTerm
    }

    @inline(__always)
    static func dot2<B: QuantizedBlock>(_: B.Type, row: UnsafeRawPointer, blocks: Int, _ a: Vector, _ b: Vector) -> (Float, Float) {
        var accA = SIMD8<Float>(), accB = SIMD8<Float>()
        var minA: Float = 0, minB: Float = 0
        for i in 0..<blocks {
            let w = B.decode(row + i * B.bytes)
            accA.addProduct(blockProducts(w.even, w.odd, a.even[i], a.odd[i]), SIMD8(repeating: w.d * a.scale[i]))
            accB.addProduct(blockProducts(w.even, w.odd, b.even[i], b.odd[i]), SIMD8(repeating: w.d * b.scale[i]))
            if B.hasMinimum {
                minA.addProduct(w.m, a.scaledSum[i])
                minB.addProduct(w.m, b.scaledSum[i])
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
            accA.addProduct(blockProducts(w.even, w.odd, a.even[i], a.odd[i]), SIMD8(repeating: w.d * a.scale[i]))
            accB.addProduct(blockProducts(w.even, w.odd, b.even[i], b.odd[i]), SIMD8(repeating: w.d * b.scale[i]))
            accC.addProduct(blockProducts(w.even, w.odd, c.even[i], c.odd[i]), SIMD8(repeating: w.d * c.scale[i]))
            accE.addProduct(blockProducts(w.even, w.odd, e.even[i], e.odd[i]), SIMD8(repeating: w.d * e.scale[i]))
            if B.hasMinimum {
                mins.addProduct(SIMD4(a.scaledSum[i], b.scaledSum[i], c.scaledSum[i], e.scaledSum[i]), SIMD4(repeating: w.m))
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
