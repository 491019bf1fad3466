/// A batch of activation vectors, in float and quantized to 8 bits in 32-value blocks.
///
/// This is llama.cpp's trick: the vector a matrix multiplies is quantized once per matmul, and
/// every weight row is then dotted against it with integer arithmetic. Each block keeps its
/// scale `d` (value ≈ d·q) and `d·Σq` (for the Q4_1 minimum term).
///
/// The int8 values are stored widened to Int16 and split by parity (`even[i]` lane j holds
/// element 2j of block i, `odd[i]` element 2j+1, lanes 8…15 covering elements 16…31), which is
/// exactly the form the kernels need to multiply them against weight bytes read as
/// `SIMD16<Int16>` lanes, without any shuffles per row.
///
/// Owns its memory (allocated once, reused every step): no allocation per token.
public final class ActivationBatch: @unchecked Sendable {
    // @unchecked Sendable: the buffers are written by one thread (the forward pass) before a
    // parallel matmul starts and only read while it runs; the thread pool's join orders the two.

    /// Values per vector (a multiple of 32).
    public let length: Int
    /// Most vectors this batch can hold.
    public let capacity: Int
    /// Vectors currently held.
    public var count: Int = 0
    public let blocks: Int

    /// `capacity × length` floats, vector-major.
    public let floats: UnsafeMutablePointer<Float>
    let even: UnsafeMutablePointer<SIMD16<Int16>>
    let odd: UnsafeMutablePointer<SIMD16<Int16>>
    let scale: UnsafeMutablePointer<Float>
    let scaledSum: UnsafeMutablePointer<Float>

    public init(length: Int, capacity: Int) {
        precondition(length % 32 == 0 && length > 0, "activation length must be a multiple of 32")
        precondition(capacity > 0)
        self.length = length
        self.capacity = capacity
        self.blocks = length / 32
        floats = .allocate(capacity: capacity * length)
        floats.initialize(repeating: 0, count: capacity * length)
        even = .allocate(capacity: capacity * blocks)
        even.initialize(repeating: .zero, count: capacity * blocks)
        odd = .allocate(capacity: capacity * blocks)
        odd.initialize(repeating: .zero, count: capacity * blocks)
        scale = .allocate(capacity: capacity * blocks)
        scale.initialize(repeating: 0, count: capacity * blocks)
        scaledSum = .allocate(capacity: capacity * blocks)
        scaledSum.initialize(repeating: 0, count: capacity * blocks)
    }

    deinit {
        floats.deallocate(); even.deallocate(); odd.deallocate()
        scale.deallocate(); scaledSum.deallocate()
    }

    /// The float values of vector `v`.
    @inline(__always)
    public func vector(_ v: Int) -> UnsafeMutablePointer<Float> { floats + v * length }

    /// Quantizes the first `count` float vectors into the 8-bit block form.
    public func quantize() {
        for v in 0..<count { quantizeVector(v) }
    }

    /// Round-to-nearest int8 quantization of one vector, per 32-value block with d = max|x|/127
    /// (so q ∈ [-127, 127]; two products of such values fit an Int16 sum, which the kernels rely on).
    func quantizeVector(_ v: Int) {
        let x = UnsafeRawPointer(floats + v * length)
        let magic = SIMD8<Float>(repeating: 12_582_912) // 1.5·2^23: adding it rounds to an integer in the low mantissa bits
        for b in 0..<blocks {
            let p = x + b * 128
            let v0 = p.loadUnaligned(fromByteOffset: 0, as: SIMD8<Float>.self)
            let v1 = p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
            let v2 = p.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
            let v3 = p.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
            // max |x| on the bit patterns: clearing the sign bit gives |x|, and non-negative
            // floats order like their bits as integers (generic pointwiseMax is not inlined).
            let absMask = SIMD8<UInt32>(repeating: 0x7FFF_FFFF)
            let a0 = unsafeBitCast(v0, to: SIMD8<UInt32>.self) & absMask
            let a1 = unsafeBitCast(v1, to: SIMD8<UInt32>.self) & absMask
            let a2 = unsafeBitCast(v2, to: SIMD8<UInt32>.self) & absMask
            let a3 = unsafeBitCast(v3, to: SIMD8<UInt32>.self) & absMask
            var m = a0.replacing(with: a1, where: a1 .> a0)
            m = m.replacing(with: a2, where: a2 .> m)
            m = m.replacing(with: a3, where: a3 .> m)
            let amax = Float(bitPattern: m.max())
            let d = amax / 127
            let id: Float = d > 0 ? 1 / d : 0
            let scaleV = SIMD8<Float>(repeating: id)
            // Round each value, then read the integer back from the float's low bits.
            @inline(__always) func q(_ v: SIMD8<Float>) -> SIMD8<Int32> {
                unsafeBitCast(v * scaleV + magic, to: SIMD8<Int32>.self) &- 0x4B40_0000
            }
            let q0 = q(v0), q1 = q(v1), q2 = q(v2), q3 = q(v3)
            let total = (q0 &+ q1 &+ q2 &+ q3).wrappedSum()
            // Values 0…15 are q0,q1 and 16…31 are q2,q3; lanes j<8 take (2j, 2j+1) of the first
            // half, lanes 8+j the same pair of the second half.
            let index = v * blocks + b
            even[index] = SIMD16<Int16>(
                Int16(truncatingIfNeeded: q0[0]), Int16(truncatingIfNeeded: q0[2]), Int16(truncatingIfNeeded: q0[4]), Int16(truncatingIfNeeded: q0[6]),
                Int16(truncatingIfNeeded: q1[0]), Int16(truncatingIfNeeded: q1[2]), Int16(truncatingIfNeeded: q1[4]), Int16(truncatingIfNeeded: q1[6]),
                Int16(truncatingIfNeeded: q2[0]), Int16(truncatingIfNeeded: q2[2]), Int16(truncatingIfNeeded: q2[4]), Int16(truncatingIfNeeded: q2[6]),
                Int16(truncatingIfNeeded: q3[0]), Int16(truncatingIfNeeded: q3[2]), Int16(truncatingIfNeeded: q3[4]), Int16(truncatingIfNeeded: q3[6]))
            odd[index] = SIMD16<Int16>(
                Int16(truncatingIfNeeded: q0[1]), Int16(truncatingIfNeeded: q0[3]), Int16(truncatingIfNeeded: q0[5]), Int16(truncatingIfNeeded: q0[7]),
                Int16(truncatingIfNeeded: q1[1]), Int16(truncatingIfNeeded: q1[3]), Int16(truncatingIfNeeded: q1[5]), Int16(truncatingIfNeeded: q1[7]),
                Int16(truncatingIfNeeded: q2[1]), Int16(truncatingIfNeeded: q2[3]), Int16(truncatingIfNeeded: q2[5]), Int16(truncatingIfNeeded: q2[7]),
                Int16(truncatingIfNeeded: q3[1]), Int16(truncatingIfNeeded: q3[3]), Int16(truncatingIfNeeded: q3[5]), Int16(truncatingIfNeeded: q3[7]))
            scale[index] = d
            scaledSum[index] = d * Float(total)
        }
    }
}
