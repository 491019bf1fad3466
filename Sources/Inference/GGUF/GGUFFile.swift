import Foundation

/// A GGUF model file, memory-mapped read-only.
///
/// The header, metadata and tensor table are parsed at `init`; tensor data stays in the mapping
/// and is handed out as `UnsafeRawBufferPointer`s into it, so a 100 MB model costs page cache,
/// not heap, and several engines in one process share the same pages.
///
/// Lifetime: pointers from `tensorData(_:)` are valid while this object is alive. Holders of
/// such pointers (the model weights) keep a strong reference to the `GGUFFile`.
public final class GGUFFile: @unchecked Sendable {
    // @unchecked Sendable: all stored properties are immutable after init and the mapping is
    // read-only (PROT_READ), so concurrent reads from any thread are safe.

    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    /// `general.alignment`, default 32.
    public let alignment: Int
    /// Offset in the file where tensor data begins (aligned).
    public let dataOffset: Int
    public let fileSize: Int

    private let base: UnsafeRawPointer
    private let tensorIndex: [String: Int]

    /// Opens and maps `path`, parses the header and checks that every tensor lies inside the file.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw GGUFError(.io("cannot open: \(String(cString: strerror(errno)))"), path: path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw GGUFError(.io("cannot stat: \(String(cString: strerror(errno)))"), path: path)
        }
        let size = Int(st.st_size)
        guard size > 0 else {
            throw GGUFError(.truncated(what: "header", offset: 0, needed: 24, fileSize: 0), path: path)
        }
        // The mapping outlives the descriptor (closing fd does not unmap). MAP_PRIVATE + PROT_READ:
        // we never write, and a file replaced underneath us cannot change pages we already read.
        guard let raw = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), raw != MAP_FAILED else {
            throw GGUFError(.io("cannot mmap: \(String(cString: strerror(errno)))"), path: path)
        }
        let base = UnsafeRawPointer(raw)
        do {
            var reader = GGUFReader(base: base, size: size, path: path)
            let parsed = try reader.parseHeader()
            self.version = parsed.version
            self.metadata = parsed.metadata
            self.tensors = parsed.tensors
            self.alignment = parsed.alignment
            self.dataOffset = parsed.dataOffset
        } catch {
            munmap(raw, size)
            throw error
        }
        self.base = base
        self.fileSize = size
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        self.tensorIndex = index
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    // MARK: Metadata accessors

    public func string(_ key: String) -> String? { metadata[key]?.stringValue }

    /// Any integer type (u8…i64, bool) as `Int`.
    public func integer(_ key: String) -> Int? { metadata[key]?.intValue }

    /// A float32/float64 (or an integer) as `Double`.
    public func float(_ key: String) -> Double? { metadata[key]?.doubleValue }

    public func array(_ key: String) -> GGUFArray? {
        if case .array(let a) = metadata[key] { return a }
        return nil
    }

    public func stringArray(_ key: String) -> [String]? {
        if case .strings(let s) = array(key) { return s }
        return nil
    }

    public func integerArray(_ key: String) -> [Int]? {
        switch array(key) {
        case .integers(let a): return a
        case .bools(let a): return a.map { $0 ? 1 : 0 }
        default: return nil
        }
    }

    public func floatArray(_ key: String) -> [Double]? {
        switch array(key) {
        case .floats(let a): return a
        case .integers(let a): return a.map(Double.init)
        default: return nil
        }
    }

    // MARK: Tensors

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The bytes of a tensor, pointing into the mapping (no copy). Valid while `self` lives.
    public func tensorData(_ tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        // Bounds were checked against the file size when the table was parsed.
        UnsafeRawBufferPointer(start: base + dataOffset + tensor.offset, count: tensor.byteCount)
    }

    /// The bytes of a named tensor, or nil when the file has no such tensor.
    public func tensorData(named name: String) -> UnsafeRawBufferPointer? {
        tensor(named: name).map(tensorData)
    }

    /// The whole file, for hashing.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: fileSize) }

    /// Hex SHA-256 of the whole file.
    public func sha256() -> String { SHA256.hex(of: bytes) }

    /// Throws `checksumMismatch` unless the file's SHA-256 is `expected` (hex, any case).
    public func verify(sha256 expected: String) throws {
        let actual = sha256()
        guard actual == expected.lowercased() else {
            throw GGUFError(.checksumMismatch(expected: expected.lowercased(), actual: actual), path: path)
        }
    }
}

/// A bounds-checked cursor over the mapped header. Every read checks the remaining length first
/// and reports a `truncated` error with the offset, so a cut-off file never reads past the map.
struct GGUFReader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var offset = 0

    struct Header {
        var version: UInt32
        var metadata: [String: GGUFValue]
        var tensors: [GGUFTensorInfo]
        var alignment: Int
        var dataOffset: Int
    }

    private func fail(_ kind: GGUFError.Kind) -> GGUFError { GGUFError(kind, path: path) }

    mutating func need(_ n: Int, _ what: @autoclosure () -> String) throws {
        guard n >= 0, offset <= size, size - offset >= n else {
            throw fail(.truncated(what: what(), offset: offset, needed: n, fileSize: size))
        }
    }

    mutating func scalar<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        // GGUF is little-endian; loadUnaligned because header fields have no alignment guarantee.
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return v
    }

    mutating func count(_ what: @autoclosure () -> String) throws -> Int {
        let n = try scalar(UInt64.self, what())
        // Any count larger than the file cannot be honest: refuse before allocating for it.
        guard n <= UInt64(size) else {
            throw fail(.truncated(what: what(), offset: offset - 8, needed: Int(clamping: n), fileSize: size))
        }
        return Int(n)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let n = try count(what() + " (string length)")
        try need(n, what())
        let bytes = UnsafeRawBufferPointer(start: base + offset, count: n)
        offset += n
        guard let s = String(validating: bytes, as: UTF8.self) else {
            // Some vocabularies hold byte tokens that are not valid UTF-8; keep them lossily.
            return String(decoding: bytes, as: UTF8.self)
        }
        return s
    }

    mutating func value(type code: UInt32, key: String) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: code) else {
            throw fail(.badValueType(key: key, type: code, offset: offset - 4))
        }
        switch type {
        case .uint8: return .uint8(try scalar(UInt8.self, key))
        case .int8: return .int8(try scalar(Int8.self, key))
        case .uint16: return .uint16(try scalar(UInt16.self, key))
        case .int16: return .int16(try scalar(Int16.self, key))
        case .uint32: return .uint32(try scalar(UInt32.self, key))
        case .int32: return .int32(try scalar(Int32.self, key))
        case .uint64: return .uint64(try scalar(UInt64.self, key))
        case .int64: return .int64(try scalar(Int64.self, key))
        case .float32: return .float32(Float(bitPattern: try scalar(UInt32.self, key)))
        case .float64: return .float64(Double(bitPattern: try scalar(UInt64.self, key)))
        case .bool: return .bool(try scalar(UInt8.self, key) != 0)
        case .string: return .string(try string(key))
        case .array: return .array(try array(key: key))
        }
    }

    mutating func array(key: String) throws -> GGUFArray {
        let code = try scalar(UInt32.self, key + " (array element type)")
        let n = try count(key + " (array length)")
        guard let type = GGUFValueType(rawValue: code) else {
            throw fail(.badValueType(key: key, type: code, offset: offset - 12))
        }
        switch type {
        case .string:
            var out: [String] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try string(key)) }
            return .strings(out)
        case .float32, .float64:
            var out: [Double] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try value(type: code, key: key).doubleValue!) }
            return .floats(out)
        case .bool:
            var out: [Bool] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try scalar(UInt8.self, key) != 0) }
            return .bools(out)
        case .array:
            var out: [GGUFValue] = []
            for _ in 0..<n { out.append(try value(type: code, key: key)) }
            return .values(out)
        default:
            var out: [Int] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                let v = try value(type: code, key: key)
                guard let i = v.intValue else {
                    throw fail(.malformed("'\(key)' holds an integer that does not fit in Int"))
                }
                out.append(i)
            }
            return .integers(out)
        }
    }

    mutating func parseHeader() throws -> Header {
        let magic = try scalar(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { throw fail(.wrongMagic(found: magic)) }
        let version = try scalar(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw fail(.unsupportedVersion(version)) }
        let tensorCount = try count("tensor count")
        let kvCount = try count("metadata count")

        var metadata: [String: GGUFValue] = [:]
        for i in 0..<kvCount {
            let key = try string("metadata key #\(i)")
            let code = try scalar(UInt32.self, "type of '\(key)'")
            metadata[key] = try value(type: code, key: key)
        }

        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.intValue, v > 0, v & (v - 1) == 0 else {
                throw fail(.malformed("general.alignment must be a power of two, got \(a)"))
            }
            alignment = v
        }

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let name = try string("tensor #\(i) name")
            let nDims = try scalar(UInt32.self, "dimension count of '\(name)'")
            guard nDims >= 1, nDims <= 4 else {
                throw fail(.malformed("tensor '\(name)' has \(nDims) dimensions (1...4 allowed)"))
            }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try scalar(UInt64.self, "dimensions of '\(name)'")
                guard d > 0, d <= UInt64(Int32.max) else {
                    throw fail(.malformed("tensor '\(name)' has dimension \(d)"))
                }
                dims.append(Int(d))
            }
            let code = try scalar(UInt32.self, "type of tensor '\(name)'")
            let tensorOffset = try scalar(UInt64.self, "offset of tensor '\(name)'")
            guard let type = GGMLType(rawValue: code) else {
                throw fail(.unsupportedTensorType(tensor: name, type: code))
            }
            guard dims[0] % type.blockLength == 0 else {
                throw fail(.malformed("tensor '\(name)' rows of \(dims[0]) values are not whole \(type) blocks"))
            }
            let elements = dims.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
            let bytes = elements / type.blockLength * type.blockBytes
            guard tensorOffset % UInt64(alignment) == 0 else {
                throw fail(.malformed("tensor '\(name)' offset \(tensorOffset) is not aligned to \(alignment)"))
            }
            tensors.append(GGUFTensorInfo(name: name, type: type, dimensions: dims,
                                          offset: Int(clamping: tensorOffset), byteCount: bytes))
        }

        let dataOffset = (offset + alignment - 1) / alignment * alignment
        for t in tensors {
            let start = dataOffset + t.offset
            guard start <= size, size - start >= t.byteCount else {
                throw fail(.truncated(what: "data of tensor '\(t.name)'", offset: start,
                                      needed: t.byteCount, fileSize: size))
            }
        }
        return Header(version: version, metadata: metadata, tensors: tensors,
                      alignment: alignment, dataOffset: dataOffset)
    }
}
