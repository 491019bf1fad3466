import Foundation
import Testing
@testable import Inference

/// The model test that guards the int8 kernels' precision: on several prompts, the int8 path's
/// next-token logits stay within a fixed distance of the float path's and pick the same token.
/// (An earlier int8 attempt flipped a near-tie and answered the France question with gibberish.)
@Suite(.serialized) struct Int8AccuracyTests {
    /// Largest allowed |int8 − float| over the whole vocabulary, in logits (which span about
    /// −15…30 here). Measured on these prompts: 1.6–2.4, the top logit moving by 0.03–1.3 (8-bit
    /// activations lose the small values of a block that holds an outlier). A broken kernel
    /// (wrong scale, sign or nibble order) moves logits by tens.
    static let maxLogitDifference: Float = 3.0

    static func prompts(_ model: LlamaModel) throws -> [[Int]] {
        let tokenizer = try Tokenizer(gguf: model.file)
        let template = ChatTemplate(tokenizer: tokenizer)
        var prompts = [LlamaTests.prompt]
        prompts.append(try template.tokens(for: [.user("What is the capital of France.")], tokenizer: tokenizer).map(Int.init))
        prompts.append(try template.tokens(for: [.user("Name three primary colors.")], tokenizer: tokenizer).map(Int.init))
        for text in ["The quick brown fox jumps over the lazy dog. The dog",
                     "def fibonacci(n):\n    if n <",
                     "In 1969, the first humans landed on the"] {
            prompts.append(tokenizer.encode(text).map(Int.init))
        }
        return prompts
    }

    @Test func int8LogitsStayCloseToFloat() throws {
        guard let path = ModelFile.path else { return }
        guard Int8KernelTests.supported else { return }
        let model = try LlamaModel(path: path)
        let vocab = model.configuration.vocabularySize
        let float = LlamaRunner(model: model, maxRows: 64, kernels: .float)
        let int8 = LlamaRunner(model: model, maxRows: 64, kernels: .int8)
        #expect(float.kernels == .float && int8.kernels == .int8)
        func lastLogits(_ runner: LlamaRunner, _ prompt: [Int]) -> [Float] {
            let cache = model.makeCache()
            var logits = [Float](repeating: 0, count: vocab)
            let rows = prompt.enumerated().map { LlamaRunner.Row(token: $1, cache: cache, wantsLogits: $0 == prompt.count - 1) }
            logits.withUnsafeMutableBufferPointer { _ = runner.step(rows, logits: $0.baseAddress!) }
            return logits
        }
        for (i, prompt) in try Self.prompts(model).enumerated() {
            let a = lastLogits(float, prompt), b = lastLogits(int8, prompt)
            let worst = zip(a, b).map { abs($0 - $1) }.max()!
            let topFloat = a.indices.max { a[$0] < a[$1] }!, topInt8 = b.indices.max { b[$0] < b[$1] }!
            print("prompt \(i): max |int8 − float| = \(worst), top token float \(topFloat) (\(a[topFloat])) int8 \(topInt8) (\(b[topInt8]))")
            #expect(worst <= Self.maxLogitDifference, "prompt \(i): max logit difference \(worst)")
            #expect(topInt8 == topFloat, "prompt \(i): int8 picks \(topInt8), float \(topFloat)")
            // The kernels must differ at all, or this test compares the float path with itself.
            #expect(worst > 0, "prompt \(i): int8 and float logits are identical")
        }
    }
}
