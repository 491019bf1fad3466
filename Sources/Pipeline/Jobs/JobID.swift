import Foundation

/// A job's identity: a UUID, lower-case hex in the 8-4-4-4-12 form on the wire.
///
/// New jobs get a UUIDv7, whose first 48 bits are the submit time in Unix milliseconds, so
/// `levee trace` can seek the trace topic by time without an index. A job submitted with an
/// idempotency key gets a UUIDv5 of `"<tenant>/<key>"` in `JobID.idempotencyNamespace` instead:
/// the same key always gives the same id (a resubmit is a no-op), and any language with a UUIDv5
/// function (Python's `uuid.uuid5`, Java's libraries) derives the same id.
public struct JobID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public let bytes: [UInt8]  // 16

    /// The namespace for idempotency-key ids: `uuid5(NAMESPACE_URL, "https://levee.dev/job-id")`.
    public static let idempotencyNamespace = JobID(string: "c5865448-8a7b-5750-ad5a-a958dd73537d")!

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses the canonical text form (case-insensitive). Nil if malformed.
    public init?(string: String) {
        let hex = Array(string.utf8)
        guard hex.count == 36, hex[8] == 45, hex[13] == 45, hex[18] == 45, hex[23] == 45 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var high: UInt8? = nil
        for (i, c) in hex.enumerated() where ![8, 13, 18, 23].contains(i) {
            let v: UInt8
            switch c {
            case 48...57: v = c - 48
            case 97...102: v = c - 87
            case 65...70: v = c - 55
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        self.bytes = out
    }

    /// A new time-ordered UUIDv7 (RFC 9562): 48-bit Unix ms, version 7, 74 random bits.
    public static func make(at time: Timestamp = .now()) -> JobID {
        var b = [UInt8](repeating: 0, count: 16)
        var rng = PooledRandom()
        let ms = UInt64(max(0, time.millisecondsSinceEpoch))
        for i in 0..<6 { b[i] = UInt8(truncatingIfNeeded: ms >> (8 * (5 - UInt64(i)))) }
        let r1 = rng.next() as UInt64, r2 = rng.next() as UInt64
        for i in 6..<16 { b[i] = UInt8(truncatingIfNeeded: (i < 14 ? r1 : r2) >> (8 * UInt64(i % 8))) }
        b[6] = 0x70 | (b[6] & 0x0F)
        b[8] = 0x80 | (b[8] & 0x3F)
        return JobID(bytes: b)!
    }

    /// The deterministic id for a caller's idempotency key (UUIDv5 of "tenant/key").
    public static func derived(tenant: String, idempotencyKey: String) -> JobID {
        var digest = SHA1.hash(idempotencyNamespace.bytes + Array("\(tenant)/\(idempotencyKey)".utf8))
        digest = Array(digest.prefix(16))
        digest[6] = 0x50 | (digest[6] & 0x0F)
        digest[8] = 0x80 | (digest[8] & 0x3F)
        return JobID(bytes: digest)!
    }

    /// The UUID version (7 for time-ordered ids, 5 for idempotency-key ids).
    public var version: Int { Int(bytes[6] >> 4) }

    /// The submit time carried by a UUIDv7; nil for other versions.
    public var embeddedTime: Timestamp? {
        guard version == 7 else { return nil }
        var ms: Int64 = 0
        for i in 0..<6 { ms = ms << 8 | Int64(bytes[i]) }
        return Timestamp(millisecondsSinceEpoch: ms)
    }

    public var description: String {
        // Written byte by byte: String(format:) per byte cost a third of the submit path's CPU.
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { out in
            var i = 0
            digits.withUTF8Buffer { hex in
                for (n, byte) in bytes.enumerated() {
                    if n == 4 || n == 6 || n == 8 || n == 10 { out[i] = 45; i += 1 }
                    out[i] = hex[Int(byte >> 4)]
                    out[i + 1] = hex[Int(byte & 0x0F)]
                    i += 2
                }
            }
            return i
        }
    }

    public static func < (a: JobID, b: JobID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = JobID(string: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "'\(text)' is not a UUID (8-4-4-4-12 hex)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// SHA-1, used only to derive UUIDv5 job ids (RFC 9562 names it for v5); not for security.
enum SHA1 {
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
        var data = message
        let bitLength = UInt64(message.count) * 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                w[i] = UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16
                    | UInt32(data[chunk + 4 * i + 2]) << 8 | UInt32(data[chunk + 4 * i + 3])
            }
            for i in 16..<80 {
                let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                w[i] = x << 1 | x >> 31
            }
            var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
            for i in 0..<80 {
                let (f, k): (UInt32, UInt32)
                switch i {
                case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A827999)
                case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9EBA1)
                case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1BBCDC)
                default: (f, k) = (b ^ c ^ d, 0xCA62C1D6)
                }
                let t = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
                (e, d, c, b, a) = (d, c, b << 30 | b >> 2, a, t)
            }
            h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e
        }
        return h.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32($0))) } }
    }
}
