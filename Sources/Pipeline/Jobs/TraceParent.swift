/// A W3C Trace Context `traceparent` value (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
/// Jobs carry one in their record and in a Kafka header; every trace event repeats it so Levee's
/// events join the caller's distributed trace.
public struct TraceParent: Sendable, Hashable, Codable, CustomStringConvertible {
    public let traceID: String
    public let parentID: String
    public let flags: String

    /// A new root context (sampled), for jobs submitted without one.
    public static func make() -> TraceParent {
        var rng = PooledRandom()
        // Eight random bytes per generator call, hex-encoded by table (a call per byte showed up
        // as one getrandom system call per byte in the submit path's profile).
        func hex(_ bytes: Int) -> String {
            let digits: StaticString = "0123456789abcdef"
            return String(unsafeUninitializedCapacity: bytes * 2) { out in
                digits.withUTF8Buffer { table in
                    var word: UInt64 = 0
                    for n in 0..<bytes {
                        if n % 8 == 0 { word = rng.next() }
                        let byte = UInt8(truncatingIfNeeded: word >> (8 * UInt64(n % 8)))
                        out[2 * n] = table[Int(byte >> 4)]
                        out[2 * n + 1] = table[Int(byte & 0x0F)]
                    }
                }
                return bytes * 2
            }
        }
        var traceID = hex(16), parentID = hex(8)
        // The format forbids all-zero ids (a chance of 2^-64, but cheap to rule out).
        while traceID.utf8.allSatisfy({ $0 == 48 }) { traceID = hex(16) }
        while parentID.utf8.allSatisfy({ $0 == 48 }) { parentID = hex(8) }
        return TraceParent(traceID: traceID, parentID: parentID, flags: "01")
    }

    private init(traceID: String, parentID: String, flags: String) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    /// Parses version 00 of the format; nil for malformed values or the all-zero ids it forbids.
    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        func isHex(_ s: String, _ n: Int) -> Bool { s.count == n && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }
        guard parts.count == 4, parts[0] == "00", isHex(parts[1], 32), isHex(parts[2], 16), isHex(parts[3], 2),
              parts[1] != String(repeating: "0", count: 32), parts[2] != String(repeating: "0", count: 16) else { return nil }
        self.init(traceID: parts[1], parentID: parts[2], flags: parts[3])
    }

    /// The same trace with a new parent (span) id, for a stage that continues it.
    public func child() -> TraceParent {
        var rng = PooledRandom()
        let id = (0..<8).map { _ in String(UInt8.random(in: 0...255, using: &rng), radix: 16).leftPadded(2) }.joined()
        return TraceParent(traceID: traceID, parentID: id, flags: flags)
    }

    public var description: String { "00-\(traceID)-\(parentID)-\(flags)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = TraceParent(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "'\(text)' is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
