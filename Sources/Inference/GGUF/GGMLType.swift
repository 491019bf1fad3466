/// The storage type of a tensor (ggml's `ggml_type` codes for the types this engine reads).
public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8

    /// Values per block: quantized types store 32 values per block, float types one.
    public var blockLength: Int {
        switch self {
        case .f32, .f16: return 1
        case .q4_0, .q4_1, .q8_0: return 32
        }
    }

    /// Bytes per block: Q4_0 = f16 scale + 16 nibble bytes; Q4_1 = f16 scale + f16 min + 16;
    /// Q8_0 = f16 scale + 32 signed bytes.
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q8_0: return "Q8_0"
        }
    }
}

/// One entry of a GGUF file's tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    public var type: GGMLType
    /// ggml order: `dimensions[0]` is the innermost (contiguous) one. A weight matrix stored
    /// row-major output×input has `dimensions == [input, output]`.
    public var dimensions: [Int]
    /// Offset from the start of the data section (not from the start of the file).
    public var offset: Int
    public var byteCount: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
}
