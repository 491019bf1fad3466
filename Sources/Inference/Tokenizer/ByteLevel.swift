/// GPT-2's reversible map between bytes and printable Unicode characters. Byte-level BPE
/// vocabularies store every token as the characters of its bytes under this map (a space
/// becomes "Ġ", a newline "Ċ"), so that any byte string has a spelling made of visible text.
enum ByteLevel {
    /// `characterForByte[b]` is the character that stands for byte `b`.
    static let characterForByte: [Unicode.Scalar] = {
        // Printable Latin-1 bytes stand for themselves; the other 68 bytes are moved, in order,
        // to U+0100 and up.
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var shifted: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(shifted)!
                shifted += 1
            }
        }
        return table
    }()

    /// The inverse map, indexed by scalar value (0..<324); -1 where no byte maps there.
    static let byteForCharacter: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in characterForByte.enumerated() { table[Int(scalar.value)] = Int16(byte) }
        return table
    }()

    /// The bytes a vocabulary spelling stands for, or nil when it holds a character outside the map.
    static func bytes(ofSpelling spelling: String) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(spelling.unicodeScalars.count)
        for scalar in spelling.unicodeScalars {
            let value = Int(scalar.value)
            guard value < byteForCharacter.count, byteForCharacter[value] >= 0 else { return nil }
            result.append(UInt8(byteForCharacter[value]))
        }
        return result
    }

    /// The vocabulary spelling of some bytes.
    static func spelling(of bytes: some Sequence<UInt8>) -> String {
        var text = String.UnicodeScalarView()
        for byte in bytes { text.append(characterForByte[Int(byte)]) }
        return String(text)
    }
}
