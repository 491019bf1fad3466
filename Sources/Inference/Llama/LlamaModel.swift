import Foundation

/// The weights of one transformer block, views into the GGUF mapping.
struct LlamaLayer: @unchecked Sendable {
    // @unchecked Sendable: read-only pointers into the mapping the model's `file` keeps alive.
    var attentionNorm: UnsafePointer<Float>
    var ffnNorm: UnsafePointer<Float>
    var q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix
    var gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
}

/// A Llama-architecture model (RMSNorm, RoPE on adjacent pairs, grouped-query attention, SwiGLU)
/// over a memory-mapped GGUF file. Immutable and shareable; the state of a run lives in
/// `KVCache`s (one per sequence) and a `LlamaRunner` (scratch buffers and threads).
public final class LlamaModel: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init and points into the
    // read-only mapping held by `file`.

    public let file: GGUFFile
    public let configuration: LlamaConfiguration
    let embedding: WeightMatrix
    let output: WeightMatrix
    let outputNorm: UnsafePointer<Float>
    let layers: [LlamaLayer]

    /// Loads `path` (mapped, not read into memory).
    public convenience init(path: String) throws {
        try self.init(file: GGUFFile(path: path))
    }

    public init(file: GGUFFile) throws {
        self.file = file
        let c = try LlamaConfiguration(file)
        configuration = c
        func vector(_ name: String, _ length: Int) throws -> UnsafePointer<Float> {
            guard let t = file.tensor(named: name) else {
                throw GGUFError(.malformed("missing tensor '\(name)'"), path: file.path)
            }
            guard t.type == .f32, t.elementCount == length else {
                throw GGUFError(.malformed("tensor '\(name)' should be \(length) F32 values, is \(t.dimensions) \(t.type)"), path: file.path)
            }
            return file.tensorData(t).baseAddress!.assumingMemoryBound(to: Float.self)
        }
        func matrix(_ name: String, rows: Int, columns: Int) throws -> WeightMatrix {
            let m = try WeightMatrix(file, name)
            guard m.rows == rows, m.columns == columns else {
                throw GGUFError(.malformed("tensor '\(name)' is \(m.rows)×\(m.columns), expected \(rows)×\(columns)"), path: file.path)
            }
            return m
        }
        embedding = try matrix("token_embd.weight", rows: c.vocabularySize, columns: c.dimension)
        // Tied embeddings: without output.weight the embedding matrix is the output projection.
        output = file.tensor(named: "output.weight") != nil
            ? try matrix("output.weight", rows: c.vocabularySize, columns: c.dimension) : embedding
        outputNorm = try vector("output_norm.weight", c.dimension)
        layers = try (0..<c.layers).map { i in
            let p = "blk.\(i)."
            return LlamaLayer(
                attentionNorm: try vector(p + "attn_norm.weight", c.dimension),
                ffnNorm: try vector(p + "ffn_norm.weight", c.dimension),
                q: try matrix(p + "attn_q.weight", rows: c.dimension, columns: c.dimension),
                k: try matrix(p + "attn_k.weight", rows: c.kvDimension, columns: c.dimension),
                v: try matrix(p + "attn_v.weight", rows: c.kvDimension, columns: c.dimension),
                o: try matrix(p + "attn_output.weight", rows: c.dimension, columns: c.dimension),
                gate: try matrix(p + "ffn_gate.weight", rows: c.feedForward, columns: c.dimension),
                up: try matrix(p + "ffn_up.weight", rows: c.feedForward, columns: c.dimension),
                down: try matrix(p + "ffn_down.weight", rows: c.dimension, columns: c.feedForward))
        }
    }

    /// An empty cache for one sequence.
    public func makeCache() -> KVCache {
        KVCache(layers: configuration.layers, kvDimension: configuration.kvDimension)
    }
}
