import Inference

/// HMAC-SHA-256 (RFC 2104) over the package's own SHA-256: Foundation on Linux has no CryptoKit,
/// and the package takes no dependencies. Signs callback deliveries.
public enum HMACSHA256 {
    public static func authenticationCode<K: Collection, M: Collection>(key: K, message: M) -> [UInt8]
        where K.Element == UInt8, M.Element == UInt8 {
        let blockSize = 64
        var block = Array(key)
        if block.count > blockSize {
            var hash = SHA256()
            hash.update(block)
            block = hash.finalize()
        }
        block += [UInt8](repeating: 0, count: blockSize - block.count)
        var inner = SHA256()
        inner.update(block.map { $0 ^ 0x36 })
        inner.update(message)
        let innerDigest = inner.finalize()
        var outer = SHA256()
        outer.update(block.map { $0 ^ 0x5c })
        outer.update(innerDigest)
        return outer.finalize()
    }

    /// Lower-case hex of the code.
    public static func hex<K: Collection, M: Collection>(key: K, message: M) -> String where K.Element == UInt8, M.Element == UInt8 {
        authenticationCode(key: key, message: message).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
