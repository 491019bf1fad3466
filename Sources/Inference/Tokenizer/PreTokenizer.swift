/// Splits text into the pieces that BPE merges within (merges never cross a piece boundary).
/// This is the regex of GPT-2's byte-level tokenizer, implemented by hand over Unicode scalars:
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// preceded, for the SmolLM/StarCoder family (`tokenizer.ggml.pre` = "smollm"), by a split that
/// isolates every numeric character (`\p{N}`), so "2024" becomes four pieces. Lookahead and the
/// optional leading space see only the current piece, as in llama.cpp and Hugging Face tokenizers.
struct PreTokenizer: Sendable {
    enum Style: Sendable {
        /// GPT-2 regex only.
        case gpt2
        /// Every `\p{N}` character alone first, then the GPT-2 regex (SmolLM, StarCoder).
        case individualDigits
    }

    /// What the regex classes see in a scalar.
    enum ScalarClass: UInt8 {
        case letter, number, whitespace, other
    }

    let style: Style

    /// Class of each ASCII scalar, so the common case avoids Unicode property lookups.
    private static let asciiClasses: [ScalarClass] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

    @inline(__always)
    static func classOf(_ value: UInt32) -> ScalarClass {
        if value < 128 { return asciiClasses[Int(value)] }
        return classify(Unicode.Scalar(value) ?? "\u{FFFD}")
    }

    static func classify(_ scalar: Unicode.Scalar) -> ScalarClass {
        let properties = scalar.properties
        if properties.isWhitespace { return .whitespace } // Unicode White_Space, as regex \s
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Scalars of a text with their class and the UTF-8 offset where each starts
    /// (`offsets` has one extra entry: the total byte length).
    struct Scalars {
        var values: [UInt32] = []
        var classes: [ScalarClass] = []
        var offsets: [Int32] = []
    }

    static func scan(_ utf8: UnsafeBufferPointer<UInt8>, into scalars: inout Scalars) {
        scalars.values.removeAll(keepingCapacity: true)
        scalars.classes.removeAll(keepingCapacity: true)
        scalars.offsets.removeAll(keepingCapacity: true)
        var i = 0
        let n = utf8.count
        while i < n {
            let lead = utf8[i]
            var value: UInt32
            var length: Int
            // Swift strings hold valid UTF-8, so the continuation bytes are there.
            if lead < 0x80 { value = UInt32(lead); length = 1 }
            else if lead < 0xE0 { value = UInt32(lead & 0x1F); length = 2 }
            else if lead < 0xF0 { value = UInt32(lead & 0x0F); length = 3 }
            else { value = UInt32(lead & 0x07); length = 4 }
            if i + length > n { length = n - i }
            for k in 1..<max(length, 1) { value = value << 6 | UInt32(utf8[i + k] & 0x3F) }
            scalars.values.append(value)
            scalars.classes.append(classOf(value))
            scalars.offsets.append(Int32(i))
            i += length
        }
        scalars.offsets.append(Int32(n))
    }

    /// Calls `body` with the scalar range [start, end) of every piece, in order.
    func split(_ scalars: Scalars, _ body: (Int, Int) -> Void) {
        let count = scalars.values.count
        switch style {
        case .gpt2:
            Self.splitGPT2(scalars, 0, count, body)
        case .individualDigits:
            var start = 0
            var i = 0
            while i < count {
                if scalars.classes[i] == .number {
                    if start < i { Self.splitGPT2(scalars, start, i, body) }
                    body(i, i + 1)
                    start = i + 1
                }
                i += 1
            }
            if start < count { Self.splitGPT2(scalars, start, count, body) }
        }
    }

    private static func splitGPT2(_ s: Scalars, _ begin: Int, _ end: Int, _ body: (Int, Int) -> Void) {
        s.values.withUnsafeBufferPointer { cp in
            s.classes.withUnsafeBufferPointer { cls in
                var pos = begin
                while pos < end {
                    let c = cp[pos]
                    // 's|'t|'re|'ve|'m|'ll|'d  (lower case only, as in GPT-2)
                    if c == 0x27, pos + 1 < end {
                        let n1 = cp[pos + 1]
                        if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 { // s t m d
                            body(pos, pos + 2); pos += 2; continue
                        }
                        if pos + 2 < end {
                            let n2 = cp[pos + 2]
                            if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) { // re ve ll
                                body(pos, pos + 3); pos += 3; continue
                            }
                        }
                    }
                    // The class that decides the branch: after an optional leading space.
                    let isSpace = c == 0x20
                    let decisive: ScalarClass? = isSpace ? (pos + 1 < end ? cls[pos + 1] : nil) : cls[pos]
                    if let decisive, decisive != .whitespace {
                        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
                        let start = pos
                        if isSpace { pos += 1 }
                        while pos < end && cls[pos] == decisive { pos += 1 }
                        body(start, pos)
                        continue
                    }
                    // \s+(?!\S) | \s+ : a whitespace run leaves its last character to the next
                    // piece when a non-space follows inside this piece.
                    var run = 0
                    while pos + run < end && cls[pos + run] == .whitespace { run += 1 }
                    if run > 1 && pos + run < end {
                        body(pos, pos + run - 1); pos += run - 1; continue
                    }
                    if run > 0 {
                        body(pos, pos + run); pos += run; continue
                    }
                    body(pos, pos + 1); pos += 1 // not reached: every class is handled above
                }
            }
        }
    }
}
