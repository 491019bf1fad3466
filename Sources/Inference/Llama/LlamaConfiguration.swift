/// The hyper-parameters of a Llama-architecture model, read from GGUF metadata
/// (`<arch>.block_count`, `<arch>.embedding_length`, …), never assumed.
public struct LlamaConfiguration: Sendable, Equatable {
    public var architecture: String
    public var layers: Int
    public var dimension: Int
    public var feedForward: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDimension: Int
    /// Dimensions of each head that RoPE rotates (the first `ropeDimensions`, adjacent pairs).
    public var ropeDimensions: Int
    public var ropeBase: Float
    public var normEpsilon: Float
    public var vocabularySize: Int
    public var contextLength: Int

    public var kvDimension: Int { kvHeads * headDimension }

    /// Reads the configuration; throws `malformed` naming the missing key.
    public init(_ file: GGUFFile) throws {
        func fail(_ why: String) -> GGUFError { GGUFError(.malformed(why), path: file.path) }
        guard let arch = file.string("general.architecture") else { throw fail("no general.architecture") }
        // Architectures with the same tensor layout and forward pass as Llama.
        guard ["llama", "mistral"].contains(arch) else {
            throw fail("architecture '\(arch)' is not supported (llama is)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = file.integer("\(arch).\(key)"), v > 0 else { throw fail("missing or invalid \(arch).\(key)") }
            return v
        }
        architecture = arch
        layers = try int("block_count")
        dimension = try int("embedding_length")
        feedForward = try int("feed_forward_length")
        heads = try int("attention.head_count")
        kvHeads = file.integer("\(arch).attention.head_count_kv") ?? heads
        guard dimension % heads == 0, heads % kvHeads == 0 else {
            throw fail("dimension \(dimension) / heads \(heads) / kv heads \(kvHeads) do not divide")
        }
        headDimension = file.integer("\(arch).attention.key_length") ?? dimension / heads
        ropeDimensions = file.integer("\(arch).rope.dimension_count") ?? headDimension
        ropeBase = Float(file.float("\(arch).rope.freq_base") ?? 10_000)
        normEpsilon = Float(file.float("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-5)
        contextLength = file.integer("\(arch).context_length") ?? 2048
        guard let embd = file.tensor(named: "token_embd.weight") else { throw fail("missing token_embd.weight") }
        vocabularySize = embd.dimensions.count == 2 ? embd.dimensions[1] : 0
        guard headDimension % 8 == 0, ropeDimensions % 2 == 0, ropeDimensions <= headDimension,
              dimension % 32 == 0, feedForward % 32 == 0, heads * headDimension == dimension else {
            throw fail("unsupported shape: dim \(dimension), head dim \(headDimension), ffn \(feedForward)")
        }
    }
}
