import Foundation
import Testing
@testable import Inference

/// Builds small GGUF files byte by byte, so the reader is tested against the spec rather than
/// against itself.
struct GGUFBuilder {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func i16(_ v: Int16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }

    /// A version-3 file with a few metadata kinds and two tensors (F32 2×3, Q8_0 32×1).
    static func sample(alignment: Int? = nil) -> [UInt8] {
        var b = GGUFBuilder()
        b.u32(0x4655_4747); b.u32(3)
        b.u64(2) // tensors
        b.u64(alignment == nil ? 6 : 7)
        b.str("general.architecture"); b.u32(8); b.str("llama")
        b.str("llama.block_count"); b.u32(4); b.u32(30)
        b.str("neg"); b.u32(3); b.i16(-7)
        b.str("eps"); b.u32(6); b.f32(1e-5)
        b.str("tokens"); b.u32(9); b.u32(8); b.u64(3); b.str("a"); b.str("bc"); b.str("<s>")
        b.str("types"); b.u32(9); b.u32(5); b.u64(2); b.u32(1); b.u32(3)
        if let alignment { b.str("general.alignment"); b.u32(4); b.u32(UInt32(alignment)) }
        let align = alignment ?? 32
        b.str("w"); b.u32(2); b.u64(3); b.u64(2); b.u32(0); b.u64(0)
        let q8Offset = UInt64((24 + align - 1) / align * align)
        b.str("q"); b.u32(1); b.u64(32); b.u32(8); b.u64(q8Offset)
        while b.bytes.count % align != 0 { b.bytes.append(0) }
        for i in 0..<6 { b.f32(Float(i) + 0.5) }
        while (b.bytes.count % align) != 0 { b.bytes.append(0) }
        b.bytes += [0x00, 0x3c] // f16 1.0
        for i in 0..<32 { b.bytes.append(UInt8(bitPattern: Int8(i - 16))) }
        return b.bytes
    }
}

func writeTemp(_ bytes: [UInt8], name: String = "t") throws -> String {
    let path = NSTemporaryDirectory() + "levee-gguf-\(name)-\(UUID().uuidString).gguf"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

@Suite struct GGUFTests {
    @Test(arguments: [nil, 64] as [Int?]) func readsHandWrittenFile(alignment: Int?) throws {
        let path = try writeTemp(GGUFBuilder.sample(alignment: alignment))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.alignment == (alignment ?? 32))
        #expect(file.string("general.architecture") == "llama")
        #expect(file.integer("llama.block_count") == 30)
        #expect(file.integer("neg") == -7)
        #expect(abs((file.float("eps") ?? 0) - 1e-5) < 1e-9)
        #expect(file.stringArray("tokens") == ["a", "bc", "<s>"])
        #expect(file.integerArray("types") == [1, 3])
        #expect(file.string("missing") == nil)
        #expect(file.tensors.map(\.name) == ["w", "q"])
        let w = try #require(file.tensor(named: "w"))
        #expect(w.type == .f32 && w.dimensions == [3, 2] && w.byteCount == 24)
        let data = file.tensorData(w)
        #expect(data.loadUnaligned(fromByteOffset: 20, as: Float.self) == 5.5)
        let q = try #require(file.tensor(named: "q"))
        #expect(q.type == .q8_0 && q.byteCount == 34)
        let qd = file.tensorData(q)
        #expect(qd[0] == 0x00 && qd[1] == 0x3c && Int8(bitPattern: qd[2]) == -16 && Int8(bitPattern: qd[33]) == 15)
        #expect(file.dataOffset % file.alignment == 0)
    }

    @Test func rejectsWrongMagic() throws {
        var bytes = GGUFBuilder.sample()
        bytes[0] = 0x47; bytes[1] = 0x47; bytes[2] = 0x4d; bytes[3] = 0x4c
        let path = try writeTemp(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try GGUFFile(path: path) } throws: { error in
            guard let e = error as? GGUFError, case .wrongMagic = e.kind else { return false }
            return true
        }
    }

    @Test func rejectsUnsupportedVersion() throws {
        var bytes = GGUFBuilder.sample()
        bytes[4] = 9
        let path = try writeTemp(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try GGUFFile(path: path) } throws: { error in
            (error as? GGUFError)?.kind == .unsupportedVersion(9)
        }
    }

    @Test func rejectsUnsupportedTensorType() throws {
        var bytes = GGUFBuilder.sample()
        // The Q8_0 tensor's type code (8) sits 12 bytes before the end of the tensor table's last entry.
        var b = GGUFBuilder(); b.str("q"); b.u32(1); b.u64(32)
        let needle = b.bytes
        let at = try #require((0..<(bytes.count - needle.count)).first { Array(bytes[$0..<$0 + needle.count]) == needle })
        bytes[at + needle.count] = 14 // Q6_K: not supported here
        let path = try writeTemp(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try GGUFFile(path: path) } throws: { error in
            (error as? GGUFError)?.kind == .unsupportedTensorType(tensor: "q", type: 14)
        }
    }

    @Test(arguments: [3, 20, 60, 150]) func reportsTruncationWithOffsets(keep: Int) throws {
        let full = GGUFBuilder.sample()
        let bytes = Array(full.prefix(keep))
        let path = try writeTemp(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try GGUFFile(path: path) } throws: { error in
            guard let e = error as? GGUFError, case .truncated(_, let offset, let needed, let size) = e.kind else { return false }
            return size == keep && offset + needed > keep && e.description.contains("truncated")
        }
    }

    @Test func reportsTruncatedTensorData() throws {
        let full = GGUFBuilder.sample()
        let path = try writeTemp(Array(full.dropLast(5)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try GGUFFile(path: path) } throws: { error in
            guard let e = error as? GGUFError, case .truncated(let what, _, let needed, _) = e.kind else { return false }
            return what.contains("'q'") && needed == 34
        }
    }

    @Test func sha256KnownVectors() {
        #expect(SHA256.hex(of: Array("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(of: long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Streaming in odd-sized pieces gives the same digest as one call.
        let million = [UInt8](repeating: 0x61, count: 1_000_000)
        var s = SHA256()
        var i = 0
        while i < million.count { let n = min(777, million.count - i); s.update(million[i..<i + n]); i += n }
        #expect(s.finalize().map { String(format: "%02x", $0) }.joined() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func checksumMismatchIsReported() throws {
        let bytes = GGUFBuilder.sample()
        let path = try writeTemp(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        try file.verify(sha256: SHA256.hex(of: bytes).uppercased())
        #expect { try file.verify(sha256: String(repeating: "0", count: 64)) } throws: { error in
            guard let e = error as? GGUFError, case .checksumMismatch = e.kind else { return false }
            return true
        }
    }

    @Test func realModelHeader() throws {
        guard let path = ModelFile.path else { return }
        let file = try GGUFFile(path: path)
        #expect(file.string("general.architecture") == "llama")
        #expect(file.integer("llama.block_count") == 30)
        #expect(file.integer("llama.embedding_length") == 576)
        #expect(file.integer("llama.attention.head_count") == 9)
        #expect(file.integer("llama.attention.head_count_kv") == 3)
        #expect(file.stringArray("tokenizer.ggml.tokens")?.count == 49152)
        let embd = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embd.dimensions == [576, 49152])
        #expect(file.tensor(named: "output.weight") == nil)
        #expect(Set(file.tensors.map(\.type)) == [.f32, .q4_1, .q8_0])
        // Every tensor lies inside the file and the last one ends at (or just before) its end.
        let end = file.tensors.map { file.dataOffset + $0.offset + $0.byteCount }.max()!
        #expect(end <= file.fileSize && file.fileSize - end < file.alignment)
    }
}
