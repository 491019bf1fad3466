import Foundation
import Testing
@testable import Inference

/// The int8 kernels (`KernelSet.int8`) against scalar references. Skipped, with a printed reason,
/// on CPUs without AVX2/FMA/F16C or outside x86-64, where runners fall back to float.
@Suite struct Int8KernelTests {
    static var supported: Bool {
        if !KernelSet.int8Supported { print("skipping int8 kernel test: this CPU has no AVX2/FMA/F16C (or is not x86-64)") }
        return KernelSet.int8Supported
    }

    static func randomBatch(length: Int, vectors: Int, kernels: KernelSet, seed: UInt64) -> ActivationBatch {
        var rng = TestRandom(state: seed)
        let x = ActivationBatch(length: length, capacity: vectors, kernels: kernels)
        x.count = vectors
        // Activations like the model's: mostly small with a few large outliers.
        for i in 0..<vectors * length { x.floats[i] = rng.float(-2...2) * (i % 37 == 0 ? 8 : 1) }
        x.prepare()
        return x
    }

    @Test func preferredKernelsFollowTheCPU() {
        #expect(KernelSet.int8.availableOrFloat == (KernelSet.int8Supported ? .int8 : .float))
        #expect(KernelSet.float.availableOrFloat == .float)
        #expect(KernelSet(name: "INT8") == .int8 && KernelSet(name: "float") == .float && KernelSet(name: "fp16") == nil)
        #if arch(x86_64)
        // Haswell and later have all three; this machine's build targets haswell anyway.
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if !flags.isEmpty {
            let hasAll = [" avx2", " fma", " f16c"].allSatisfy { flags.contains($0) }
            #expect(KernelSet.int8Supported == hasAll)
        }
        #endif
    }

    @Test func quantizationRoundsEachBlockToItsScale() throws {
        guard Self.supported else { return }
        let x = Self.randomBatch(length: 128, vectors: 3, kernels: .int8, seed: 11)
        #expect(x.kernels == .int8)
        // A zero block must quantize to zeros with scale 0, not NaN.
        for j in 0..<32 { x.floats[2 * 128 + 32 + j] = 0 }
        x.prepare()
        for v in 0..<3 {
            for b in 0..<4 {
                let d = x.scales[v * 4 + b]
                var largest: Int8 = 0, sum: Float = 0, amax: Float = 0
                for j in 0..<32 {
                    let i = v * 128 + b * 32 + j
                    let q = x.quants[i]
                    largest = max(largest, q == .min ? 127 : abs(q))
                    #expect(q != .min)
                    #expect(abs(d * Float(q) - x.floats[i]) <= d / 2 * 1.0001 + 1e-7, "vector \(v) block \(b) value \(j)")
                    sum += x.floats[i]
                    amax = max(amax, abs(x.floats[i]))
                }
                #expect(abs(d - amax / 127) <= 1e-7 * max(1, amax))
                #expect(abs(x.blockSums[v * 4 + b] - sum) < 1e-4)
                if v == 2 && b == 1 {
                    #expect(d == 0 && largest == 0)
                } else {
                    #expect(largest == 127)
                }
            }
        }
    }

    @Test(arguments: [GGMLType.q8_0, .q4_1, .f32], [1, 2, 3, 4, 5, 7, 9])
    func int8MatrixTimesVectorsMatchesIntegerReference(type: GGMLType, vectors: Int) {
        guard Self.supported else { return }
        let rows = 37, columns = 160, blocks = columns / 32
        let (matrix, w, raw) = randomMatrix(type, rows: rows, columns: columns, seed: UInt64(vectors) &* 17 &+ UInt64(type.rawValue))
        let x = Self.randomBatch(length: columns, vectors: vectors, kernels: .int8, seed: 40 &+ UInt64(vectors))
        var out = [Float](repeating: .nan, count: vectors * rows)
        out.withUnsafeMutableBufferPointer { matrix.multiply(x, rows: 0..<rows, into: $0.baseAddress!, outStride: rows) }
        for v in 0..<vectors {
            for r in 0..<rows {
                var exact = 0.0, magnitude = 0.0
                if type == .f32 {
                    // F32 weights take the float path whatever the batch's kernels.
                    for c in 0..<columns {
                        exact += Double(w[r][c]) * Double(x.floats[v * columns + c])
                        magnitude += abs(Double(w[r][c]) * Double(x.floats[v * columns + c]))
                    }
                } else {
                    // Σ_blocks d_w·d_x·Σ q_w·q_x (+ m_w·Σx for Q4_1), from the raw blocks and the
                    // batch's own quantized values, in Double.
                    let blockBytes = type == .q4_1 ? 20 : 34
                    for b in 0..<blocks {
                        let p = raw.pointer + r * blocks * blockBytes + b * blockBytes
                        let dw = Double(Float(p.loadUnaligned(as: Float16.self)))
                        let dx = Double(x.scales[v * blocks + b])
                        var dot = 0.0
                        for j in 0..<32 {
                            let qw: Int
                            if type == .q4_1 {
                                let byte = p.load(fromByteOffset: 4 + j % 16, as: UInt8.self)
                                qw = Int(j < 16 ? byte & 0x0F : byte >> 4)
                            } else {
                                qw = Int(p.load(fromByteOffset: 2 + j, as: Int8.self))
                            }
                            dot += Double(qw) * Double(x.quants[v * columns + b * 32 + j])
                        }
                        exact += dw * dx * dot
                        magnitude += abs(dw * dx * dot)
                        if type == .q4_1 {
                            let m = Double(Float(p.loadUnaligned(fromByteOffset: 2, as: Float16.self)))
                            exact += m * Double(x.blockSums[v * blocks + b])
                            magnitude += abs(m * Double(x.blockSums[v * blocks + b]))
                        }
                    }
                }
                let got = Double(out[v * rows + r])
                #expect(abs(got - exact) <= 1e-5 * max(1, magnitude), "row \(r) vector \(v): \(got) vs \(exact)")
            }
        }
    }

    @Test(arguments: [GGMLType.q8_0, .q4_1])
    func int8IsCloseToFloatAndBatchIndependent(type: GGMLType) {
        guard Self.supported else { return }
        let rows = 64, columns = 576, vectors = 7
        let (matrix, _, _) = randomMatrix(type, rows: rows, columns: columns, seed: 3)
        let q = Self.randomBatch(length: columns, vectors: vectors, kernels: .int8, seed: 5)
        let f = Self.randomBatch(length: columns, vectors: vectors, kernels: .float, seed: 5)
        var outQ = [Float](repeating: .nan, count: vectors * rows), outF = outQ
        outQ.withUnsafeMutableBufferPointer { matrix.multiply(q, rows: 0..<rows, into: $0.baseAddress!, outStride: rows) }
        outF.withUnsafeMutableBufferPointer { matrix.multiply(f, rows: 0..<rows, into: $0.baseAddress!, outStride: rows) }
        // Quantizing x to 8 bits costs about 1% of the typical magnitude, never more than a few.
        let scale = outF.map(abs).max()!
        let worst = zip(outQ, outF).map { abs($0 - $1) }.max()!
        #expect(worst < 0.03 * scale, "worst \(worst) of \(scale)")
        // Each vector alone gives bit-identical results to the batch of 7 (4 + 2 + 1 kernels).
        for v in 0..<vectors {
            let alone = ActivationBatch(length: columns, capacity: 1, kernels: .int8)
            alone.count = 1
            alone.floats.update(from: q.vector(v), count: columns)
            alone.prepare()
            var out = [Float](repeating: .nan, count: rows)
            out.withUnsafeMutableBufferPointer { matrix.multiply(alone, rows: 0..<rows, into: $0.baseAddress!, outStride: rows) }
            #expect(out == Array(outQ[v * rows..<(v + 1) * rows]), "vector \(v)")
        }
    }
}
