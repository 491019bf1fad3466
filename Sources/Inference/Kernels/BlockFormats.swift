/// The quantized block layouts the integer kernels read, each decoded into the split Int16 form
/// that `ActivationBatch` uses (lane j of `even` = element 2j, of `odd` = element 2j+1, with
/// lanes 8…15 covering elements 16…31).
protocol QuantizedBlock {
    /// Bytes per 32-value block.
    static var bytes: Int { get }
    /// Whether blocks carry a minimum (value = d·q + m) besides the scale (value = d·q).
    static var hasMinimum: Bool { get }
    /// Decodes the block at `p`. `p` must point at `bytes` readable bytes.
    static func decode(_ p: UnsafeRawPointer) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>, d: Float, m: Float)
}

/// Q8_0: f16 scale, then 32 signed bytes. value = d·q.
enum Q8_0Block: QuantizedBlock {
    static let bytes = 34
    static let hasMinimum = false

    @inline(__always)
    static func decode(_ p: UnsafeRawPointer) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>, d: Float, m: Float) {
        // Each Int16 lane holds two consecutive int8 values: the low byte (element 2j) is
        // sign-extended by shifting it up and arithmetically back down; the high byte (2j+1)
        // by an arithmetic shift alone.
        let x = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int16>.self)
        let d = Float(p.loadUnaligned(as: Float16.self))
        return ((x &<< 8) &>> 8, x &>> 8, d, 0)
    }
}

/// Q4_1: f16 scale d, f16 minimum m, then 16 bytes of nibbles: byte i holds element i in its low
/// nibble and element 16+i in its high nibble. value = d·q + m, q ∈ 0…15.
enum Q4_1Block: QuantizedBlock {
    static let bytes = 20
    static let hasMinimum = true

    @inline(__always)
    static func decode(_ p: UnsafeRawPointer) -> (even: SIMD16<Int16>, odd: SIMD16<Int16>, d: Float, m: Float) {
        let q = p.loadUnaligned(fromByteOffset: 4, as: SIMD8<Int16>.self)
        // Lanes 0…7: the 16 bytes as they are (elements 0…15 in the low nibbles);
        // lanes 8…15: shifted by 4 so that the high nibbles (elements 16…31) come down.
        let x = SIMD16<Int16>(lowHalf: q, highHalf: q &>> 4)
        let mask = SIMD16<Int16>(repeating: 0x0F)
        let d = Float(p.loadUnaligned(as: Float16.self))
        let m = Float(p.loadUnaligned(fromByteOffset: 2, as: Float16.self))
        return (x & mask, (x &>> 8) & mask, d, m)
    }
}

/// Products of a decoded weight block with one activation block, summed pairwise to 8 Int32 lanes.
/// |each Int16 sum| ≤ 2·127·127 < 2^15, so the Int16 arithmetic cannot overflow.
@inline(__always)
func blockProducts(_ we: SIMD16<Int16>, _ wo: SIMD16<Int16>, _ ae: SIMD16<Int16>, _ ao: SIMD16<Int16>) -> SIMD8<Float> {
    let p = we &* ae &+ wo &* ao
    // Widen pairs of Int16 lanes to Int32 by shifts (the stdlib's SIMD conversions are scalar loops).
    let p32 = unsafeBitCast(p, to: SIMD8<Int32>.self)
    let s = ((p32 &<< 16) &>> 16) &+ (p32 &>> 16)
    // Int32 → Float exactly for |s| < 2^22 (here ≤ 32·127·127): add the bits of 1.5·2^23, subtract it as a float.
    return unsafeBitCast(s &+ 0x4B40_0000, to: SIMD8<Float>.self) - SIMD8<Float>(repeating: 12_582_912)
}
