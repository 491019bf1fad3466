import Foundation
import Testing
@testable import Inference

/// Owns raw bytes for a test matrix.
final class RawBytes {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(_ bytes: [UInt8]) {
        count = bytes.count
        pointer = .allocate(byteCount: max(1, count), alignment: 64)
        bytes.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }
    deinit { pointer.deallocate() }
}

/// Deterministic pseudo-random numbers (SplitMix64), so failures reproduce.
struct TestRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func float(_ range: ClosedRange<Float>) -> Float {
        range.lowerBound + (range.upperBound - range.lowerBound) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

func f16Bytes(_ x: Float) -> [UInt8] {
    let bits = Float16(x).bitPattern
    return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
}

/// A random matrix in `type`, with a naive scalar dequantization of it.
func randomMatrix(_ type: GGMLType, rows: Int, columns: Int, seed: UInt64) -> (WeightMatrix, [[Float]], RawBytes) {
    var rng = TestRandom(state: seed)
    var bytes: [UInt8] = []
    var values: [[Float]] = []
    for _ in 0..<rows {
        var row: [Float] = []
        for _ in 0..<columns / 32 {
            switch type {
            case .q8_0:
                let d = Float(Float16(rng.float(0.001...0.05)))
                bytes += f16Bytes(d)
                for _ in 0..<32 {
                    let q = Int8(Int(rng.next() % 255) - 127)
                    bytes.append(UInt8(bitPattern: q))
                    row.append(d * Float(q))
                }
            case .q4_1:
                let d = Float(Float16(rng.float(0.001...0.05)))
                let m = Float(Float16(rng.float(-0.4...0.0)))
                bytes += f16Bytes(d) + f16Bytes(m)
                var block = [Float](repeating: 0, count: 32)
                for j in 0..<16 {
                    let b = rng.byte()
                    bytes.append(b)
                    block[j] = d * Float(b & 0x0F) + m
                    block[16 + j] = d * Float(b >> 4) + m
                }
                row += block
            case .f32:
                for _ in 0..<32 {
                    let v = rng.float(-1...1)
                    withUnsafeBytes(of: v) { bytes += $0 }
                    row.append(v)
                }
            default:
                fatalError("no generator for \(type)")
            }
        }
        values.append(row)
    }
    let raw = RawBytes(bytes)
    let matrix = WeightMatrix(name: "test", type: type, rows: rows, columns: columns, data: raw.pointer, owner: raw)
    return (matrix, values, raw)
}

@Suite struct KernelTests {
    @Test func blockSumsArePrepared() {
        var rng = TestRandom(state: 7)
        let batch = ActivationBatch(length: 96, capacity: 3)
        batch.count = 2
        for i in 0..<288 { batch.floats[i] = rng.float(-3...3) }
        batch.prepare()
        for v in 0..<2 {
            for b in 0..<3 {
                var s: Float = 0
                for j in 0..<32 { s += batch.floats[v * 96 + b * 32 + j] }
                #expect(abs(batch.blockSums[v * 3 + b] - s) < 1e-4)
            }
        }
        #expect(batch.blockSums[6] == 0) // vector 2 is beyond `count`
    }

    @Test(arguments: [GGMLType.q8_0, .q4_1, .f32], [1, 2, 3, 4, 5, 7, 9])
    func matrixTimesVectorsMatchesScalarReference(type: GGMLType, vectors: Int) {
        let rows = 37, columns = 160
        let (matrix, w, _) = randomMatrix(type, rows: rows, columns: columns, seed: UInt64(vectors) &* 31 &+ UInt64(type.rawValue))
        var rng = TestRandom(state: 99 &+ UInt64(vectors))
        let x = ActivationBatch(length: columns, capacity: vectors)
        x.count = vectors
        for i in 0..<vectors * columns { x.floats[i] = rng.float(-2...2) }
        x.prepare()
        var out = [Float](repeating: .nan, count: vectors * rows)
        out.withUnsafeMutableBufferPointer { matrix.multiply(x, rows: 0..<rows, into: $0.baseAddress!, outStride: rows) }
        for v in 0..<vectors {
            for r in 0..<rows {
                // Reference: the dot product of the dequantized weights with the floats, in Double.
                var exact = 0.0, magnitude = 0.0
                for c in 0..<columns {
                    let xv = Double(x.floats[v * columns + c])
                    exact += Double(w[r][c]) * xv
                    magnitude += abs(Double(w[r][c]) * xv)
                }
                let got = Double(out[v * rows + r])
                #expect(abs(got - exact) <= 1e-5 * max(1, magnitude), "row \(r) vector \(v): \(got) vs \(exact)")
            }
        }
    }

    @Test(arguments: [GGMLType.q8_0, .q4_1, .f32]) func dequantizeRowMatchesReference(type: GGMLType) {
        let (matrix, w, _) = randomMatrix(type, rows: 3, columns: 64, seed: 5)
        var out = [Float](repeating: .nan, count: 64)
        for r in 0..<3 {
            out.withUnsafeMutableBufferPointer { matrix.dequantizeRow(r, into: $0.baseAddress!) }
            #expect(out == w[r])
        }
    }

    @Test(arguments: [1, 2, 3], [false, true]) func threadPoolGroupMatchesSerial(threads: Int, spinning: Bool) {
        let (a, _, ra) = randomMatrix(.q4_1, rows: 300, columns: 64, seed: 1)
        let (b, _, rb) = randomMatrix(.q8_0, rows: 70, columns: 64, seed: 2)
        _ = (ra, rb)
        let x = ActivationBatch(length: 64, capacity: 3)
        x.count = 3
        var rng = TestRandom(state: 3)
        for i in 0..<3 * 64 { x.floats[i] = rng.float(-1...1) }
        x.prepare()
        let outA = UnsafeMutablePointer<Float>.allocate(capacity: 900), outB = UnsafeMutablePointer<Float>.allocate(capacity: 210)
        defer { outA.deallocate(); outB.deallocate() }
        let pool = ThreadPool(threads: threads, spinning: spinning)
        defer { pool.shutdown() }
        // Many small regions in a row: the hand-off must neither lose nor repeat an item.
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { hits.deallocate() }
        hits.initialize(repeating: 0, count: 64)
        let h = UnsafeSendable(hits)
        for _ in 0..<500 { pool.parallelFor(64) { i in h.value[i] += 1 } }
        #expect((0..<64).allSatisfy { hits[$0] == 500 })
        pool.multiply([MatMulTask(a, x, into: outA, outStride: 300), MatMulTask(b, x, into: outB, outStride: 70)])
        var refA = [Float](repeating: 0, count: 900), refB = [Float](repeating: 0, count: 210)
        refA.withUnsafeMutableBufferPointer { a.multiply(x, rows: 0..<300, into: $0.baseAddress!, outStride: 300) }
        refB.withUnsafeMutableBufferPointer { b.multiply(x, rows: 0..<70, into: $0.baseAddress!, outStride: 70) }
        #expect(Array(UnsafeBufferPointer(start: outA, count: 900)) == refA)
        #expect(Array(UnsafeBufferPointer(start: outB, count: 210)) == refB)
    }
}
