/// The quantized block layouts the kernels read, each decoded to its 32 values as four
/// `SIMD8<Float>` (before scaling), plus scale and minimum.
///
/// The element-by-element `SIMD8<Float>(Float(v[0]), …)` form is deliberate: LLVM turns it into
/// one vpmovzxbd/vpmovsxbd + vcvtdq2ps, whereas the stdlib's generic SIMD conversions are not
/// always inlined in a function this size (measured: they became calls costing a third of the time).
protocol QuantizedBlock {
    /// Bytes per 32-value block.
    static var bytes: Int { get }
    /// Whether blocks carry a minimum (value = d·q + m) besides the scale (value = d·q).
    static var hasMinimum: Bool { get }
    /// Decodes the block at `p` (which must point at `bytes` readable bytes): q as floats, d, m.
    static func decode(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, d: Float, m: Float)
}

@inline(__always)
func floats8(_ v: SIMD16<UInt8>, _ o: Int) -> SIMD8<Float> {
    SIMD8<Float>(Float(v[o]), Float(v[o + 1]), Float(v[o + 2]), Float(v[o + 3]),
                 Float(v[o + 4]), Float(v[o + 5]), Float(v[o + 6]), Float(v[o + 7]))
}

@inline(__always)
func floats8(_ v: SIMD16<Int8>, _ o: Int) -> SIMD8<Float> {
    SIMD8<Float>(Float(v[o]), Float(v[o + 1]), Float(v[o + 2]), Float(v[o + 3]),
                 Float(v[o + 4]), Float(v[o + 5]), Float(v[o + 6]), Float(v[o + 7]))
}

/// Q8_0: f16 scale, then 32 signed bytes. value = d·q.
enum Q8_0Block: QuantizedBlock {
    static let bytes = 34
    static let hasMinimum = false

    @inline(__always)
    static func decode(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, d: Float, m: Float) {
        let lo = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
        let hi = p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
        let d = Float(p.loadUnaligned(as: Float16.self))
        return (floats8(lo, 0), floats8(lo, 8), floats8(hi, 0), floats8(hi, 8), d, 0)
    }
}

/// Q4_1: f16 scale d, f16 minimum m, then 16 bytes of nibbles: byte i holds element i in its low
/// nibble and element 16+i in its high nibble. value = d·q + m, q ∈ 0…15.
enum Q4_1Block: QuantizedBlock {
    static let bytes = 20
    static let hasMinimum = true

    @inline(__always)
    static func decode(_ p: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, d: Float, m: Float) {
        let q = p.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
        let d = Float(p.loadUnaligned(as: Float16.self))
        let m = Float(p.loadUnaligned(fromByteOffset: 2, as: Float16.self))
        let lo = q & 0x0F, hi = q &>> 4
        return (floats8(lo, 0), floats8(lo, 8), floats8(hi, 0), floats8(hi, 8), d, m)
    }
}
