/// Why a GGUF file could not be read or trusted. Each case names the file and says where.
public struct GGUFError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The first four bytes are not "GGUF".
        case wrongMagic(found: UInt32)
        /// A format version this reader does not understand (2 and 3 are supported).
        case unsupportedVersion(UInt32)
        /// A tensor stored in a ggml type this reader has no size or kernel for.
        case unsupportedTensorType(tensor: String, type: UInt32)
        /// The file ends before a structure that should be there.
        case truncated(what: String, offset: Int, needed: Int, fileSize: Int)
        /// A metadata value type code outside the spec.
        case badValueType(key: String, type: UInt32, offset: Int)
        /// Structurally wrong content (e.g. a string that is not UTF-8, absurd dimension count).
        case malformed(String)
        /// The file's SHA-256 is not the expected one.
        case checksumMismatch(expected: String, actual: String)
        /// The file could not be opened or mapped.
        case io(String)
    }

    public var kind: Kind
    public var path: String

    public init(_ kind: Kind, path: String) {
        self.kind = kind
        self.path = path
    }

    public var description: String {
        switch kind {
        case .wrongMagic(let found):
            return "\(path): not a GGUF file (magic 0x\(String(found, radix: 16)), expected 0x46554747 \"GGUF\")"
        case .unsupportedVersion(let v):
            return "\(path): GGUF version \(v) is not supported (versions 2 and 3 are)"
        case .unsupportedTensorType(let tensor, let type):
            return "\(path): tensor '\(tensor)' has ggml type \(type), which this engine cannot read (F32, F16, Q4_0, Q4_1, Q8_0 are supported)"
        case .truncated(let what, let offset, let needed, let fileSize):
            return "\(path): truncated file: \(what) needs \(needed) bytes at offset \(offset), but the file has \(fileSize) bytes; download it again"
        case .badValueType(let key, let type, let offset):
            return "\(path): metadata '\(key)' has unknown value type \(type) at offset \(offset)"
        case .malformed(let why):
            return "\(path): malformed GGUF: \(why)"
        case .checksumMismatch(let expected, let actual):
            return "\(path): sha256 is \(actual), expected \(expected); the file is corrupt or a different model"
        case .io(let why):
            return "\(path): \(why)"
        }
    }
}
