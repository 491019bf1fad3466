import Foundation
import Testing

/// Runs the built `levee` binary (see ``LeveeProcess``, which waits off the cooperative pool).
private enum LeveeBinary {
    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let output = try await LeveeProcess.run(arguments, environment: environment, timeout: 300)
        return (output.status, output.stdout, output.stderr)
    }
}

@Suite("levee generate (built binary, needs the model file)")
struct GenerateCommandTests {
    @Test func greedyStoryStreamsTheReferenceContinuation() async throws {
        let r = try await LeveeBinary.run(["generate", "--prompt", "Once upon a time, there was a little cat who", "--temperature", "0", "--max-tokens", "9"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == " had a special way of making people happy.\n")
        #expect(r.stderr.contains("tokens/s"))
        #expect(r.stderr.contains("11 prompt tokens, 9 generated (length)"))
    }

    @Test func jsonHasTokensCountsAndTimings() async throws {
        let r = try await LeveeBinary.run(["generate", "--json", "--chat", "--prompt", "What is the capital of France.", "--temperature", "0", "--max-tokens", "20"])
        #expect(r.status == 0, "\(r.stderr)")
        struct Output: Decodable {
            var text: String
            var token_ids: [Int]
            var prompt_tokens: Int
            var completion_tokens: Int
            var finish_reason: String
            var timings: [String: Double]
        }
        let o = try JSONDecoder().decode(Output.self, from: Data(r.stdout.utf8))
        #expect(o.text.contains("Paris"), "answer: \(o.text)")
        #expect(o.finish_reason == "stop")
        #expect(o.completion_tokens == o.token_ids.count && o.completion_tokens > 0)
        #expect(o.token_ids.last == 2) // <|im_end|> ended the turn
        #expect(o.prompt_tokens > 30)
        #expect(o.timings["total_ms"] != nil && o.timings["first_token_ms"] != nil)
    }

    @Test func seedMakesSampledRunsRepeat() async throws {
        let args = ["generate", "--json", "--prompt", "The weather today", "--temperature", "1", "--seed", "7", "--max-tokens", "12"]
        let a = try await LeveeBinary.run(args), b = try await LeveeBinary.run(args)
        #expect(a.status == 0 && b.status == 0, "\(a.stderr)")
        struct Output: Decodable { var token_ids: [Int]; var seed: UInt64 }
        let oa = try JSONDecoder().decode(Output.self, from: Data(a.stdout.utf8))
        let ob = try JSONDecoder().decode(Output.self, from: Data(b.stdout.utf8))
        #expect(oa.token_ids == ob.token_ids && oa.seed == 7)
    }

    @Test(arguments: [
        (["generate"], "--prompt"),
        (["generate", "--prompt", "x", "--max-tokens", "0"], "max_tokens"),
        (["generate", "--prompt", "x", "--temperature", "hot"], "--temperature"),
        (["generate", "--prompt", "x", "--system", "s"], "--chat"),
        (["generate", "--prompt", "x", "--bogus"], "--bogus"),
    ])
    func badUsageExits64(arguments: [String], mentions: String) async throws {
        let r = try await LeveeBinary.run(arguments)
        #expect(r.status == 64)
        #expect(r.stderr.contains(mentions), "\(r.stderr)")
    }

    @Test func missingModelFails() async throws {
        let r = try await LeveeBinary.run(["generate", "--prompt", "x", "--model", "/nonexistent/m.gguf"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("/nonexistent/m.gguf"))
    }
}
