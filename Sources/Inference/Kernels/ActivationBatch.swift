/// A batch of activation vectors (the inputs of a matrix product), in float, with the sum of
/// each 32-value block precomputed for the Q4_1 minimum term (Σ (d·q + m)·x = d·Σ q·x + m·Σ x).
///
/// The float kernels multiply dequantized weight blocks against these floats directly. For the
/// int8 kernels (`KernelSet.int8`), `prepare()` also quantizes each 32-value block to int8 with
/// one float scale (d = max|x| / 127, q = round(x / d)), which `vpmaddubsw` multiplies with the
/// weights' integers; the Q4_1 minimum term keeps using the exact float block sum.
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
    /// The kernels the matrix products use on this batch.
    public let kernels: KernelSet

    /// `capacity × length` floats, vector-major.
    public let floats: UnsafeMutablePointer<Float>
    /// `capacity × blocks` sums of 32 consecutive values.
    let blockSums: UnsafeMutablePointer<Float>
    /// int8 kernels only: `capacity × length` quantized values (32-byte aligned) and
    /// `capacity × blocks` scales.
    let quants: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>

    public init(length: Int, capacity: Int, kernels: KernelSet = .float) {
        precondition(length % 32 == 0 && length > 0, "activation length must be a multiple of 32")
        precondition(capacity > 0)
        self.length = length
        self.capacity = capacity
        self.blocks = length / 32
        self.kernels = kernels.availableOrFloat
        let quantized = self.kernels == .int8 ? capacity : 0
        quants = UnsafeMutableRawPointer.allocate(byteCount: max(32, quantized * length), alignment: 32)
            .bindMemory(to: Int8.self, capacity: max(32, quantized * length))
        quants.initialize(repeating: 0, count: max(32, quantized * length))
        scales = .allocate(capacity: max(1, quantized * blocks))
        scales.initialize(repeating: 0, count: max(1, quantized * blocks))
        floats = .allocate(capacity: capacity * length)
        floats.initialize(repeating: 0, count: capacity * length)
        blockSums = .allocate(capacity: capacity * blocks)
        blockSums.initialize(repeating: 0, count: capacity * blocks)
    }

    deinit {
        floats.deallocate()
        blockSums.deallocate()
        quants.deallocate()
        scales.deallocate()
    }

    /// The float values of vector `v`.
    @inline(__always)
    public func vector(_ v: Int) -> UnsafeMutablePointer<Float> { floats + v * length }

    /// Prepares the first `count` vectors for the kernels (block sums; for int8 kernels also the
    /// quantized blocks). Call after writing `floats`.
    public func prepare() {
        #if arch(x86_64)
        if kernels == .int8 {
            Int8Kernels.quantize(self)
            return
        }
        #endif
        for v in 0..<count {
            let x = UnsafeRawPointer(floats + v * length)
            for b in 0..<blocks {
                let p = x + b * 128
                let s = p.loadUnaligned(fromByteOffset: 0, as: SIMD8<Float>.self)
                    + p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                    + p.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
                    + p.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
                blockSums[v * blocks + b] = s.sum()
            }
        }
    }
}
