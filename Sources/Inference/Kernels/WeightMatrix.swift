/// A weight matrix stored row-major (output × input) in the GGUF mapping, used in place:
/// rows are decoded block by block inside the dot products, never dequantized as a whole.
public struct WeightMatrix: @unchecked Sendable {
    // @unchecked Sendable: points into read-only memory (the GGUF mapping) that `owner` keeps alive.

    public let name: String
    public let type: GGMLType
    /// Output size.
    public let rows: Int
    /// Input size.
    public let columns: Int
    let data: UnsafeRawPointer
    let rowBytes: Int
    private let owner: AnyObject

    /// The 2-D tensor `name` (GGUF dimensions `[columns, rows]`).
    public init(_ file: GGUFFile, _ name: String) throws {
        guard let info = file.tensor(named: name) else {
            throw GGUFError(.malformed("missing tensor '\(name)'"), path: file.path)
        }
        guard info.dimensions.count == 2 else {
            throw GGUFError(.malformed("tensor '\(name)' should be a matrix, has dimensions \(info.dimensions)"), path: file.path)
        }
        switch info.type {
        case .f32, .q8_0, .q4_1: break
        default: throw GGUFError(.unsupportedTensorType(tensor: name, type: info.type.rawValue), path: file.path)
        }
        guard info.dimensions[0] % 32 == 0 else {
            throw GGUFError(.malformed("tensor '\(name)' has \(info.dimensions[0]) columns, not a multiple of 32"), path: file.path)
        }
        self.name = name
        owner = file
        type = info.type
        columns = info.dimensions[0]
        rows = info.dimensions[1]
        rowBytes = columns / type.blockLength * type.blockBytes
        data = file.tensorData(info).baseAddress!
        if type == .f32 {
            // The data section is aligned (≥ 32) and offsets are multiples of the alignment,
            // so float rows are 4-byte aligned as `UnsafePointer<Float>` requires.
            precondition(Int(bitPattern: data) % 4 == 0)
        }
    }

    /// A matrix over raw block data that `owner` keeps alive (tests build matrices this way).
    init(name: String, type: GGMLType, rows: Int, columns: Int, data: UnsafeRawPointer, owner: AnyObject) {
        precondition(columns % 32 == 0)
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.owner = owner
        rowBytes = columns / type.blockLength * type.blockBytes
    }

    /// Computes rows `range` of `W·x` for every vector of `x`: `out[v·outStride + r]`, with the
    /// kernels `x` was made for (`ActivationBatch.kernels`).
    /// `x` must be prepared (`prepare()`) after its floats were written.
    public func multiply(_ x: ActivationBatch, rows range: Range<Int>,
                         into out: UnsafeMutablePointer<Float>, outStride: Int) {
        precondition(x.length == columns, "\(name): input has \(x.length) values, matrix takes \(columns)")
        #if arch(x86_64)
        if x.kernels == .int8 {
            switch type {
            case .q4_1: return Int8Kernels.multiply(Q4_1Int8.self, data: data, rowBytes: rowBytes, x, range, out, outStride)
            case .q8_0: return Int8Kernels.multiply(Q8_0Int8.self, data: data, rowBytes: rowBytes, x, range, out, outStride)
            default: break // F32 rows take the float path below
            }
        }
        #endif
        switch type {
        case .q4_1: multiplyQuantized(Q4_1Block.self, x, range, out, outStride)
        case .q8_0: multiplyQuantized(Q8_0Block.self, x, range, out, outStride)
        case .f32:
            for r in range {
                let row = data.assumingMemoryBound(to: Float.self) + r * columns
                for v in 0..<x.count {
                    out[v * outStride + r] = RowKernels.dotF32(row, x.vector(v), count: columns)
                }
            }
        default:
            preconditionFailure("unsupported matrix type \(type)") // rejected in init
        }
    }

    @inline(__always)
    private func multiplyQuantized<B: QuantizedBlock>(_ block: B.Type, _ x: ActivationBatch, _ range: Range<Int>,
                                                      _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let blocks = x.blocks
        let n = x.count
        for r in range {
            let row = data + r * rowBytes
            var v = 0
            while v + 4 <= n {
                let s = RowKernels.dot4(block, row: row, blocks: blocks,
                                        .init(x, v), .init(x, v + 1), .init(x, v + 2), .init(x, v + 3))
                out[v * outStride + r] = s[0]
                out[(v + 1) * outStride + r] = s[1]
                out[(v + 2) * outStride + r] = s[2]
                out[(v + 3) * outStride + r] = s[3]
                v += 4
            }
            if v + 2 <= n {
                let s = RowKernels.dot2(block, row: row, blocks: blocks, .init(x, v), .init(x, v + 1))
                out[v * outStride + r] = s.0
                out[(v + 1) * outStride + r] = s.1
                v += 2
            }
            if v < n {
                out[v * outStride + r] = RowKernels.dot1(block, row: row, blocks: blocks, .init(x, v))
            }
        }
    }

    /// Row `r` as floats (embedding lookup).
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(r >= 0 && r < rows, "\(name): row \(r) out of 0..<\(rows)")
        let row = data + r * rowBytes
        switch type {
        case .f32:
            out.update(from: row.assumingMemoryBound(to: Float.self), count: columns)
        case .q8_0:
            for b in 0..<columns / 32 {
                let p = row + b * 34
                let d = Float(p.loadUnaligned(as: Float16.self))
                for j in 0..<32 { out[b * 32 + j] = d * Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) }
            }
        case .q4_1:
            for b in 0..<columns / 32 {
                let p = row + b * 20
                let d = Float(p.loadUnaligned(as: Float16.self))
                let m = Float(p.loadUnaligned(fromByteOffset: 2, as: Float16.self))
                for j in 0..<16 {
                    let byte = p.load(fromByteOffset: 4 + j, as: UInt8.self)
                    out[b * 32 + j] = d * Float(byte & 0x0F) + m
                    out[b * 32 + 16 + j] = d * Float(byte >> 4) + m
                }
            }
        default:
            preconditionFailure("unsupported matrix type \(type)")
        }
    }
}

/// One matrix product inside a `MatMulGroup`.
public struct MatMulTask: @unchecked Sendable {
    // @unchecked Sendable: `out` is written only in the rows a worker claims; workers claim
    // disjoint row chunks, and the caller reads `out` only after the group has joined.
    public var matrix: WeightMatrix
    public var input: ActivationBatch
    public var out: UnsafeMutablePointer<Float>
    public var outStride: Int

    public init(_ matrix: WeightMatrix, _ input: ActivationBatch, into out: UnsafeMutablePointer<Float>, outStride: Int) {
        self.matrix = matrix
        self.input = input
        self.out = out
        self.outStride = outStride
    }
}

extension ThreadPool {
    /// Runs several matrix products that share no outputs (e.g. Q, K and V) as one parallel
    /// region, split into row chunks so two threads share the work evenly.
    public func multiply(_ tasks: [MatMulTask]) {
        // Chunk size: enough rows to amortize the hand-off, small enough to balance.
        var chunks: [(task: Int, rows: Range<Int>)] = []
        let totalRows = tasks.reduce(0) { $0 + $1.matrix.rows }
        let chunkRows = max(16, totalRows / (threadCount * 8))
        for (t, task) in tasks.enumerated() {
            var r = 0
            while r < task.matrix.rows {
                let end = min(task.matrix.rows, r + chunkRows)
                chunks.append((t, r..<end))
                r = end
            }
        }
        let work = UnsafeSendable((tasks, chunks))
        parallelFor(chunks.count) { i in
            let (tasks, chunks) = work.value
            let c = chunks[i]
            let task = tasks[c.task]
            task.matrix.multiply(task.input, rows: c.rows, into: task.out, outStride: task.outStride)
        }
    }
}

/// Carries a value into a parallel region whose join orders every access (see each use).
struct UnsafeSendable<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
