/// One metadata value of a GGUF file, typed as the file stores it.
///
/// GGUF keeps integers in eight widths; they stay distinct here so that a file can be described
/// exactly, and `GGUFFile.integer(_:)` folds them into `Int` for callers that only want a number.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case uint64(UInt64)
    case int64(Int64)
    case float32(Float)
    case float64(Double)
    case bool(Bool)
    case string(String)
    case array(GGUFArray)

    /// Any integer width as `Int` (nil for non-integers, or a `UInt64` beyond `Int.max`).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }

    /// Either float width (or an integer) as `Double`.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

/// A GGUF metadata array. Arrays are homogeneous in the format; the common element types get
/// compact storage (a 49k-entry vocabulary as `[String]`, scores as `[Float]`), anything else
/// falls back to a list of values.
public enum GGUFArray: Sendable, Equatable {
    case strings([String])
    case integers([Int])
    case floats([Double])
    case bools([Bool])
    case values([GGUFValue])

    public var count: Int {
        switch self {
        case .strings(let a): return a.count
        case .integers(let a): return a.count
        case .floats(let a): return a.count
        case .bools(let a): return a.count
        case .values(let a): return a.count
        }
    }
}

/// The on-disk type code of a metadata value (GGUF spec `gguf_metadata_value_type`).
enum GGUFValueType: UInt32 {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6
    case bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}
