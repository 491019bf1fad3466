import Foundation
import Testing
@testable import Inference

@Suite("Engine request/result types and errors")
struct EngineTypesTests {
    @Test func requestJSONRoundTripsAndDefaultsSampling() throws {
        let request = GenerationRequest(id: "job-9", prompt: .chat([.system("s"), .user("u")]),
                                        sampling: SamplingParameters(maxTokens: 12, seed: 3), model: "m")
        let data = try JSONEncoder().encode(request)
        #expect(try JSONDecoder().decode(GenerationRequest.self, from: data) == request)

        let minimal = try JSONDecoder().decode(GenerationRequest.self, from: Data(#"{"id": "a", "prompt": {"text": "hello"}}"#.utf8))
        #expect(minimal.prompt == .text("hello"))
        #expect(minimal.sampling == SamplingParameters())
        #expect(minimal.model == nil)

        let chat = try JSONDecoder().decode(Prompt.self, from: Data(#"{"messages": [{"role": "tool", "content": "42"}]}"#.utf8))
        #expect(chat == .chat([ChatMessage(role: "tool", content: "42")]))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Prompt.self, from: Data("{}".utf8)) }
    }

    @Test func resultJSONUsesSnakeCase() throws {
        let result = GenerationResult(text: "hi", tokenIDs: [1, 2], promptTokens: 3, completionTokens: 2, finishReason: .length,
                                      timings: GenerationTimings(promptMilliseconds: 1, firstTokenMilliseconds: 2, decodeMilliseconds: 3, totalMilliseconds: 4),
                                      model: "smol")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(result), as: UTF8.self)
        #expect(json == #"{"completion_tokens":2,"finish_reason":"length","model":"smol","prompt_tokens":3,"text":"hi","timings":{"decode_ms":3,"first_token_ms":2,"prompt_ms":1,"total_ms":4},"token_ids":[1,2]}"#)
        #expect(try JSONDecoder().decode(GenerationResult.self, from: Data(json.utf8)) == result)
    }

    @Test(arguments: [
        (InferenceError.invalidRequest("x"), false),
        (InferenceError.unknownModel("m"), false),
        (InferenceError.backendUnreachable("x"), true),
        (InferenceError.timeout("x"), true),
        (InferenceError.backendError(status: 500, "x"), true),
        (InferenceError.backendError(status: 503, "x"), true),
        (InferenceError.backendError(status: 429, "x"), true),
        (InferenceError.backendError(status: 401, "x"), false),
        (InferenceError.backendError(status: 0, "x"), false),
        (InferenceError.modelLoad("x"), false),
        (InferenceError.outOfMemory("x"), true),
        (InferenceError.cancelled(requestID: "j"), false),
    ])
    func retriability(_ error: InferenceError, _ retriable: Bool) {
        #expect(error.isRetriable == retriable)
        // Every description says what happened and what to do.
        #expect(error.description.contains(error.detail))
        #expect(error.description.contains(error.remedy))
        #expect(!error.remedy.isEmpty)
    }

    @Test func cancelledResultsCanBeTurnedIntoErrors() {
        let result = GenerationResult(text: "", promptTokens: 0, completionTokens: 0, finishReason: .cancelled, model: "m")
        let error = #expect(throws: InferenceError.self) { try result.throwIfCancelled(requestID: "job-1") }
        #expect(error?.kind == .cancelled)
        #expect(error?.detail.contains("job-1") == true)
        let done = GenerationResult(text: "", promptTokens: 0, completionTokens: 0, finishReason: .stop, model: "m")
        #expect(throws: Never.self) { try done.throwIfCancelled() }
    }

    @Test func modelLocationOrder() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("levee-model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("models"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let explicit = directory.appendingPathComponent("explicit.gguf").path
        let fromEnvironment = directory.appendingPathComponent("env.gguf").path
        let cached = directory.appendingPathComponent("models/" + ModelLocation.defaultFileName).path
        for path in [explicit, fromEnvironment, cached] { _ = FileManager.default.createFile(atPath: path, contents: Data()) }
        let environment = ["LEVEE_MODEL": fromEnvironment, "LEVEE_CACHE_DIR": directory.path, "HOME": "/nonexistent"]
        #expect(try ModelLocation.resolve(explicit: explicit, environment: environment) == explicit)
        #expect(try ModelLocation.resolve(explicit: nil, environment: environment) == fromEnvironment)
        #expect(try ModelLocation.resolve(explicit: nil, environment: ["LEVEE_CACHE_DIR": directory.path]) == cached)
        #expect(ModelLocation.defaultPath(environment: ["HOME": "/home/x"]) == "/home/x/.cache/levee/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        let missing = #expect(throws: InferenceError.self) {
            try ModelLocation.resolve(explicit: nil, environment: ["HOME": "/nonexistent"])
        }
        #expect(missing?.kind == .modelLoad)
        #expect(missing?.description.contains("scripts/setup") == true)
        #expect(missing?.detail.contains("/nonexistent/.cache/levee/models/") == true)
        #expect(throws: InferenceError.self) { try ModelLocation.resolve(explicit: directory.path, environment: [:]) } // a directory
        #expect(try ModelLocation.resolve(explicit: "~/explicit.gguf", environment: ["HOME": directory.path]) == explicit)
    }
}
