/// Turns generated tokens into text as they arrive. A token may end in the middle of a UTF-8
/// character (emoji and CJK characters are often split over byte tokens), so the decoder holds
/// back an incomplete trailing sequence and emits only whole characters.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecial: Bool
    private var pending: [UInt8] = []

    init(tokenizer: Tokenizer, skipSpecial: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
        pending.reserveCapacity(16)
    }

    /// Adds one token and returns the text that is now complete (often empty for a partial character).
    public mutating func append(_ id: Int32) -> String {
        tokenizer.appendBytes(of: id, to: &pending, skipSpecial: skipSpecial)
        return takeComplete()
    }

    /// Adds raw bytes (for tests and other byte sources).
    public mutating func append(bytes: some Sequence<UInt8>) -> String {
        pending.append(contentsOf: bytes)
        return takeComplete()
    }

    /// Bytes held back waiting for the rest of a character.
    public var heldBytes: Int { pending.count }

    /// Ends the stream; an incomplete trailing character becomes U+FFFD.
    public mutating func finish() -> String {
        defer { pending.removeAll(keepingCapacity: true) }
        return String(decoding: pending, as: UTF8.self)
    }

    private mutating func takeComplete() -> String {
        let keep = Self.incompleteTailLength(pending)
        let ready = pending.count - keep
        guard ready > 0 else { return "" }
        let text = String(decoding: pending[..<ready], as: UTF8.self)
        pending.removeFirst(ready)
        return text
    }

    /// Length of a trailing lead byte plus its continuation bytes when the character is not complete yet.
    static func incompleteTailLength(_ bytes: [UInt8]) -> Int {
        var back = 0
        // Look at most 3 bytes back for the lead byte of the last character.
        while back < min(3, bytes.count) {
            let byte = bytes[bytes.count - 1 - back]
            if byte & 0xC0 != 0x80 { // not a continuation byte
                let needed: Int
                if byte < 0x80 { needed = 1 }
                else if byte & 0xE0 == 0xC0 { needed = 2 }
                else if byte & 0xF0 == 0xE0 { needed = 3 }
                else if byte & 0xF8 == 0xF0 { needed = 4 }
                else { return 0 } // invalid lead byte: nothing will complete it
                return back + 1 < needed ? back + 1 : 0
            }
            back += 1
        }
        return 0 // only continuation bytes: invalid, let decoding replace them
    }
}
