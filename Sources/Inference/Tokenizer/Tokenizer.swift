import Foundation

/// The model's byte-level BPE tokenizer, built from the vocabulary and merges stored in the GGUF
/// file (`tokenizer.ggml.*`). Immutable and thread-safe: one instance serves every job.
///
/// Encoding: split the text into pieces (see `PreTokenizer`), map each piece's UTF-8 bytes to
/// their one-byte tokens, then apply merges lowest rank first (a heap of candidate pairs with
/// lazy invalidation, leftmost first on ties), as Hugging Face tokenizers and llama.cpp do.
/// `decode(encode(s)) == s` for any text made of bytes the vocabulary has (see `unrepresentableBytes`).
public final class Tokenizer: Sendable {
    /// How a vocabulary entry is used (`tokenizer.ggml.token_type`, llama.cpp's numbering).
    public enum TokenKind: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public let vocabularySize: Int
    public let bosTokenID: Int32?
    public let eosTokenID: Int32
    public let paddingTokenID: Int32?
    public let unknownTokenID: Int32?
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`; false for SmolLM2).
    public let addsBOS: Bool
    /// The Jinja chat template stored in the file, verbatim (see `ChatTemplate`).
    public let chatTemplateSource: String?
    /// Tokens that end a generation: EOS, and the chat end-of-turn marker when present.
    public let endOfGenerationTokenIDs: Set<Int32>

    /// Bytes the vocabulary has no token for. Encoding drops them, as Hugging Face tokenizers
    /// (no unknown token in the BPE model) and llama.cpp do. SmolLM2 lacks the control characters
    /// U+0004, U+0006, U+0013, U+0014, U+0016, U+001D and bytes that never occur in UTF-8; every
    /// other text round-trips exactly.
    public let unrepresentableBytes: [UInt8]

    private let preTokenizer: PreTokenizer
    private let merges: MergeTable
    private let byteTokens: [Int32]            // token for each single byte, -1 if none
    private let tokenBytes: [UInt8]            // every token's bytes, back to back
    private let tokenOffsets: [Int32]          // token i is tokenBytes[offsets[i]..<offsets[i+1]]
    private let kinds: [TokenKind]
    private let spellings: [String]            // the vocabulary as stored (GPT-2 byte spelling)
    /// Control and user-defined tokens by first UTF-8 byte, longest first (for parseSpecial).
    private let specialsByFirstByte: [UInt8: [(bytes: [UInt8], id: Int32)]]
    private let specialIDs: [String: Int32]

    /// Builds a tokenizer from plain arrays (the GGUF fields, or a small test vocabulary).
    /// - Parameters:
    ///   - tokens: vocabulary in GPT-2 byte spelling; control tokens in plain text.
    ///   - merges: "left right" pairs, highest priority first.
    ///   - tokenTypes: llama.cpp token types per entry (1 normal, 3 control, 4 user-defined...);
    ///     nil treats every entry as normal.
    ///   - pre: `tokenizer.ggml.pre`: "smollm" and its family split digits one by one, "gpt2" does not.
    public init(tokens: [String], merges mergeList: [String], tokenTypes: [Int]? = nil,
                bosTokenID: Int32? = nil, eosTokenID: Int32, paddingTokenID: Int32? = nil,
                unknownTokenID: Int32? = nil, addsBOS: Bool = false, pre: String = "smollm",
                chatTemplate: String? = nil) throws(InferenceError) {
        func bad(_ message: String) -> InferenceError { .modelLoad("tokenizer: " + message) }
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else { throw bad("the vocabulary is empty") }
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw bad("\(tokenTypes.count) token types for \(tokens.count) tokens")
        }
        switch pre {
        case "smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva":
            preTokenizer = PreTokenizer(style: .individualDigits)
        case "gpt2", "gpt-2":
            preTokenizer = PreTokenizer(style: .gpt2)
        default:
            throw bad("pre-tokenizer '\(pre)' is not supported (supported: smollm family, gpt2)")
        }
        for (name, id) in [("bos", bosTokenID), ("eos", eosTokenID), ("padding", paddingTokenID), ("unknown", unknownTokenID)] {
            if let id, id < 0 || Int(id) >= tokens.count { throw bad("\(name) token id \(id) is outside the vocabulary") }
        }

        let kinds = (tokenTypes ?? []).isEmpty
            ? [TokenKind](repeating: .normal, count: tokens.count)
            : tokenTypes!.map { TokenKind(rawValue: $0) ?? .undefined }
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(tokens.count + 1)
        var idForSpelling: [String: Int32] = [:]
        idForSpelling.reserveCapacity(tokens.count)
        var byteTokens = [Int32](repeating: -1, count: 256)
        var specials: [UInt8: [(bytes: [UInt8], id: Int32)]] = [:]
        var specialIDs: [String: Int32] = [:]
        for (index, spelling) in tokens.enumerated() {
            let id = Int32(index)
            let kind = kinds[index]
            if kind == .control || kind == .userDefined {
                // Special tokens are stored as their plain text.
                let text = Array(spelling.utf8)
                bytes.append(contentsOf: text)
                if let first = text.first {
                    specials[first, default: []].append((text, id))
                    specialIDs[spelling] = id
                }
            } else if let decoded = ByteLevel.bytes(ofSpelling: spelling) {
                bytes.append(contentsOf: decoded)
                if idForSpelling[spelling] == nil { idForSpelling[spelling] = id }
                if decoded.count == 1, byteTokens[Int(decoded[0])] < 0, kind == .normal || kind == .byte { byteTokens[Int(decoded[0])] = id }
            } else {
                // Not in byte spelling: keep the text as is so decode still shows something.
                bytes.append(contentsOf: spelling.utf8)
            }
            offsets.append(Int32(bytes.count))
        }
        let unrepresentable = (0..<256).filter { byteTokens[$0] < 0 }.map { UInt8($0) }
        // Real vocabularies may lack a few bytes (SmolLM2 lacks 21), but not most of them.
        if unrepresentable.count > 64 {
            throw bad("\(unrepresentable.count) of 256 bytes have no token; this is not a byte-level BPE vocabulary")
        }
        var table = MergeTable(capacity: mergeList.count)
        for (rank, merge) in mergeList.enumerated() {
            guard let space = merge.firstIndex(of: " ") else { throw bad("merge \(rank) '\(merge)' has no space") }
            let left = String(merge[..<space]), right = String(merge[merge.index(after: space)...])
            guard let l = idForSpelling[left], let r = idForSpelling[right], let m = idForSpelling[left + right] else {
                throw bad("merge \(rank) '\(merge)' names a token that is not in the vocabulary")
            }
            table.insert(left: l, right: r, rank: Int32(rank), merged: m)
        }
        for key in specials.keys { specials[key]!.sort { $0.bytes.count > $1.bytes.count } }

        self.vocabularySize = tokens.count
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.paddingTokenID = paddingTokenID
        self.unknownTokenID = unknownTokenID
        self.addsBOS = addsBOS
        self.chatTemplateSource = chatTemplate
        self.merges = table
        self.byteTokens = byteTokens
        self.unrepresentableBytes = unrepresentable
        self.tokenBytes = bytes
        self.tokenOffsets = offsets
        self.kinds = kinds
        self.spellings = tokens
        self.specialsByFirstByte = specials
        self.specialIDs = specialIDs
        var ends: Set<Int32> = [eosTokenID]
        if let imEnd = specialIDs["<|im_end|>"] { ends.insert(imEnd) }
        self.endOfGenerationTokenIDs = ends
    }

    /// Reads the tokenizer from a GGUF file's metadata.
    public convenience init(gguf: GGUFFile) throws(InferenceError) {
        func missing(_ key: String) -> InferenceError {
            .modelLoad("\(gguf.path): metadata key '\(key)' is missing; the file has no usable tokenizer")
        }
        guard let model = gguf.string("tokenizer.ggml.model") else { throw missing("tokenizer.ggml.model") }
        guard model == "gpt2" else {
            throw .modelLoad("\(gguf.path): tokenizer model '\(model)' is not supported (only byte-level BPE, 'gpt2')")
        }
        guard let tokens = gguf.stringArray("tokenizer.ggml.tokens") else { throw missing("tokenizer.ggml.tokens") }
        guard let merges = gguf.stringArray("tokenizer.ggml.merges") else { throw missing("tokenizer.ggml.merges") }
        guard let eos = gguf.integer("tokenizer.ggml.eos_token_id") else { throw missing("tokenizer.ggml.eos_token_id") }
        let addsBOS: Bool
        if case .bool(let value)? = gguf.metadata["tokenizer.ggml.add_bos_token"] { addsBOS = value } else { addsBOS = false }
        try self.init(
            tokens: tokens, merges: merges, tokenTypes: gguf.integerArray("tokenizer.ggml.token_type"),
            bosTokenID: gguf.integer("tokenizer.ggml.bos_token_id").map(Int32.init),
            eosTokenID: Int32(eos),
            paddingTokenID: gguf.integer("tokenizer.ggml.padding_token_id").map(Int32.init),
            unknownTokenID: gguf.integer("tokenizer.ggml.unknown_token_id").map(Int32.init),
            addsBOS: addsBOS,
            pre: gguf.string("tokenizer.ggml.pre") ?? "gpt2",
            chatTemplate: gguf.string("tokenizer.chat_template"))
    }

    // MARK: - Encoding

    /// Token ids for `text`. With `parseSpecial`, control tokens written in the text
    /// (`<|im_start|>`, `<|endoftext|>`...) become their single ids; without it (the default,
    /// right for user content) they are ordinary text. BOS is never added here.
    public func encode(_ text: String, parseSpecial: Bool = false) -> [Int32] {
        var text = text
        return text.withUTF8 { utf8 in
            var output: [Int32] = []
            output.reserveCapacity(utf8.count / 3 + 4)
            var scratch = Scratch()
            if parseSpecial && !specialsByFirstByte.isEmpty {
                var start = 0
                var i = 0
                while i < utf8.count {
                    if let candidates = specialsByFirstByte[utf8[i]],
                       let match = candidates.first(where: { Self.matches($0.bytes, utf8, at: i) }) {
                        if start < i { encodeOrdinary(UnsafeBufferPointer(rebasing: utf8[start..<i]), into: &output, scratch: &scratch) }
                        output.append(match.id)
                        i += match.bytes.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < utf8.count { encodeOrdinary(UnsafeBufferPointer(rebasing: utf8[start...]), into: &output, scratch: &scratch) }
            } else {
                encodeOrdinary(utf8, into: &output, scratch: &scratch)
            }
            return output
        }
    }

    private static func matches(_ needle: [UInt8], _ haystack: UnsafeBufferPointer<UInt8>, at index: Int) -> Bool {
        guard index + needle.count <= haystack.count else { return false }
        for k in 0..<needle.count where haystack[index + k] != needle[k] { return false }
        return true
    }

    /// Buffers reused across the pieces of one `encode` call.
    private struct Scratch {
        var scalars = PreTokenizer.Scalars()
        var symbols: [Int32] = []
        var next: [Int32] = []
        var previous: [Int32] = []
        var heap: [UInt64] = []
    }

    private func encodeOrdinary(_ utf8: UnsafeBufferPointer<UInt8>, into output: inout [Int32], scratch: inout Scratch) {
        PreTokenizer.scan(utf8, into: &scratch.scalars)
        let offsets = scratch.scalars.offsets
        preTokenizer.split(scratch.scalars) { first, end in
            let from = Int(offsets[first]), to = Int(offsets[end])
            mergePiece(UnsafeBufferPointer(rebasing: utf8[from..<to]), into: &output, scratch: &scratch)
        }
    }

    /// Applies the merges to one piece's bytes and appends the resulting tokens.
    private func mergePiece(_ bytes: UnsafeBufferPointer<UInt8>, into output: inout [Int32], scratch: inout Scratch) {
        if bytes.count == 1 {
            let token = byteTokens[Int(bytes[0])]
            if token >= 0 { output.append(token) }
            return
        }
        scratch.symbols.removeAll(keepingCapacity: true)
        scratch.next.removeAll(keepingCapacity: true)
        scratch.previous.removeAll(keepingCapacity: true)
        scratch.heap.removeAll(keepingCapacity: true)
        for byte in bytes {
            let token = byteTokens[Int(byte)]
            if token >= 0 { scratch.symbols.append(token) } // bytes without a token are dropped
        }
        let n = scratch.symbols.count
        if n == 0 { return }
        for i in 0..<n {
            scratch.next.append(i + 1 < n ? Int32(i + 1) : -1)
            scratch.previous.append(Int32(i - 1))
        }
        let merges = self.merges
        // Heap entries pack (rank, left position): lower rank first, then leftmost.
        for i in 0..<(n - 1) {
            if let pair = merges.lookup(scratch.symbols[i], scratch.symbols[i + 1]) {
                Self.push(&scratch.heap, UInt64(UInt32(pair.rank)) << 32 | UInt64(i))
            }
        }
        while let top = Self.pop(&scratch.heap) {
            let rank = Int32(truncatingIfNeeded: top >> 32)
            let left = Int(truncatingIfNeeded: top & 0xFFFF_FFFF)
            let leftSymbol = scratch.symbols[left]
            let right = Int(scratch.next[left])
            guard leftSymbol >= 0, right >= 0 else { continue }
            // Stale entry: the pair at this position changed since it was queued.
            guard let pair = merges.lookup(leftSymbol, scratch.symbols[right]), pair.rank == rank else { continue }
            scratch.symbols[left] = pair.merged
            scratch.symbols[right] = -1
            let after = scratch.next[right]
            scratch.next[left] = after
            if after >= 0 { scratch.previous[Int(after)] = Int32(left) }
            let before = scratch.previous[left]
            if before >= 0, let p = merges.lookup(scratch.symbols[Int(before)], pair.merged) {
                Self.push(&scratch.heap, UInt64(UInt32(p.rank)) << 32 | UInt64(before))
            }
            if after >= 0, let p = merges.lookup(pair.merged, scratch.symbols[Int(after)]) {
                Self.push(&scratch.heap, UInt64(UInt32(p.rank)) << 32 | UInt64(left))
            }
        }
        var position: Int32 = 0
        while position >= 0 {
            output.append(scratch.symbols[Int(position)])
            position = scratch.next[Int(position)]
        }
    }

    private static func push(_ heap: inout [UInt64], _ value: UInt64) {
        heap.append(value)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) >> 1
            if heap[parent] <= value { break }
            heap[child] = heap[parent]
            child = parent
        }
        heap[child] = value
    }

    private static func pop(_ heap: inout [UInt64]) -> UInt64? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        let count = heap.count
        var parent = 0
        while true {
            var child = 2 * parent + 1
            if child >= count { break }
            if child + 1 < count && heap[child + 1] < heap[child] { child += 1 }
            if heap[child] >= last { break }
            heap[parent] = heap[child]
            parent = child
        }
        heap[parent] = last
        return top
    }

    // MARK: - Decoding

    /// The text of some tokens. Byte sequences that are not valid UTF-8 (only possible for token
    /// sequences the encoder never produces, or a cut in mid-character) become U+FFFD.
    /// `skipSpecial` leaves out control tokens such as `<|im_end|>`.
    public func decode(_ ids: some Sequence<Int32>, skipSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids { appendBytes(of: id, to: &bytes, skipSpecial: skipSpecial) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends a token's bytes (nothing for ids outside the vocabulary).
    public func appendBytes(of id: Int32, to bytes: inout [UInt8], skipSpecial: Bool = false) {
        guard id >= 0, Int(id) < vocabularySize else { return }
        if skipSpecial && isSpecial(id) { return }
        let from = Int(tokenOffsets[Int(id)]), to = Int(tokenOffsets[Int(id) + 1])
        tokenBytes.withUnsafeBufferPointer { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: $0[from..<to])) }
    }

    /// The raw bytes of one token (may be part of a UTF-8 character).
    public func bytes(of id: Int32) -> [UInt8] {
        var result: [UInt8] = []
        appendBytes(of: id, to: &result)
        return result
    }

    /// The vocabulary entry as stored in the file (GPT-2 byte spelling: "Ġupon").
    public func spelling(of id: Int32) -> String? {
        guard id >= 0, Int(id) < vocabularySize else { return nil }
        return spellings[Int(id)]
    }

    public func kind(of id: Int32) -> TokenKind? {
        guard id >= 0, Int(id) < vocabularySize else { return nil }
        return kinds[Int(id)]
    }

    /// Control or user-defined token.
    public func isSpecial(_ id: Int32) -> Bool {
        guard let kind = kind(of: id) else { return false }
        return kind == .control || kind == .userDefined
    }

    /// The id of a special token such as "<|im_start|>".
    public func specialTokenID(_ text: String) -> Int32? { specialIDs[text] }

    /// A decoder for generated tokens that yields only whole UTF-8 characters.
    public func makeStreamingDecoder(skipSpecial: Bool = true) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecial: skipSpecial)
    }
}
