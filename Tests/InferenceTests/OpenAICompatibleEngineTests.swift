import Foundation
import Synchronization
import Testing
@testable import Inference

/// A small OpenAI-compatible server in Python on a loopback port, started per test. What it does
/// depends on the requested model name: "ok" echoes the request, "fail500", "ratelimit",
/// "missing" (404), "bad" (400) and "garbage" (non-JSON 200) fail in their ways, "slow" waits 3 s.
final class FakeOpenAIServer {
    static let script = #"""
import json, os, signal, socket, sys, threading, time
# The test process may have SIGTERM blocked, and the mask is inherited: unblock it, and leave
# when the parent test process goes away.
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
parent = os.getppid()
def watch_parent():
    while os.getppid() == parent: time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        model = body.get("model")
        if model == "slow":
            time.sleep(3)
        if model == "fail500": return self.reply(500, {"error": {"message": "boom"}})
        if body.get("stream"):
            echo = json.dumps({"path": self.path, "auth": self.headers.get("Authorization"), "body": body}, sort_keys=True)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            third = len(echo) // 3
            chat = self.path == "/v1/chat/completions"
            for part in (echo[:third], echo[third:2 * third], echo[2 * third:]):
                choice = {"index": 0, "delta": {"content": part}} if chat else {"index": 0, "text": part}
                self.wfile.write(("data: " + json.dumps({"model": "streamed-" + model, "choices": [choice]}) + "\n\n").encode())
                self.wfile.flush()
                time.sleep(0.05)
            final = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else {"index": 0, "text": "", "finish_reason": "length"}
            self.wfile.write(("data: " + json.dumps({"choices": [final]}) + "\n\n").encode())
            self.wfile.write(("data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 3}}) + "\n\n").encode())
            self.wfile.write(b"data: [DONE]\n\n")
            return
        if model == "ratelimit": return self.reply(429, {"error": {"message": "slow down"}})
        if model == "missing": return self.reply(404, {"error": {"message": "The model `missing` does not exist."}})
        if model == "bad": return self.reply(400, {"error": {"message": "max_tokens is too large"}})
        if model == "garbage": return self.reply(200, "<html>not json</html>", "text/html")
        echo = json.dumps({"path": self.path, "auth": self.headers.get("Authorization"), "body": body}, sort_keys=True)
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        if self.path == "/v1/chat/completions":
            return self.reply(200, {"id": "c1", "model": "served-" + model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": echo}, "finish_reason": "stop"}]})
        if self.path == "/v1/completions":
            return self.reply(200, {"id": "c2", "model": "served-" + model, "usage": usage,
                "timings": {"prompt_ms": 4.5, "predicted_ms": 20.25},
                "choices": [{"index": 0, "text": echo, "finish_reason": "length"}]})
        return self.reply(404, {"error": {"message": "no route " + self.path}})

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
closed = socket.socket(); closed.bind(("127.0.0.1", 0)); closed_port = closed.getsockname()[1]; closed.close()
with open(sys.argv[1] + ".tmp", "w") as f: f.write("%d %d\n" % (server.server_address[1], closed_port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
"""#

    let process = Process()
    let port: Int
    /// A loopback port nothing listens on.
    let closedPort: Int

    init() throws {
        // The server writes "PORT CLOSED_PORT" to a file once it listens (a file rather than a
        // pipe: reading the child's stdout pipe from a test blocked forever on Linux Foundation).
        let portFile = FileManager.default.temporaryDirectory.appendingPathComponent("levee-fake-openai-\(UUID().uuidString)").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.script, portFile]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { try? FileManager.default.removeItem(atPath: portFile) }
        let deadline = ContinuousClock.now + .seconds(20)
        var ports: [Int] = []
        while ports.count != 2 {
            guard process.isRunning, ContinuousClock.now < deadline else {
                process.terminate()
                throw InferenceError.backendUnreachable("the fake OpenAI server (python3) did not start")
            }
            Thread.sleep(forTimeInterval: 0.02)
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), text.hasSuffix("\n") {
                ports = text.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }
        port = ports[0]
        closedPort = ports[1]
    }

    deinit {
        // SIGKILL: a signal mask inherited from the test process can block SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func engine(model: String = "ok", base: String? = nil, apiKey: String? = nil, timeout: Duration = .seconds(10)) -> OpenAICompatibleEngine {
        OpenAICompatibleEngine(configuration: OpenAICompatibleConfiguration(
            baseURL: URL(string: base ?? "http://127.0.0.1:\(port)")!, apiKey: apiKey, model: model, requestTimeout: timeout))
    }
}

/// What the fake server echoed back as the completion text.
private struct Echo: Decodable {
    var path: String
    var auth: String?
    var body: [String: JSONValue]
}

private enum JSONValue: Decodable, Equatable {
    case number(Double), string(String), array([JSONValue]), object([String: JSONValue]), bool(Bool), null
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
}

@Suite("OpenAI-compatible engine (local fake server)", .serialized)
struct OpenAICompatibleEngineTests {
    @Test func chatRequestAndResponseAreMapped() async throws {
        let server = try FakeOpenAIServer()
        let engine = server.engine(apiKey: "sekret")
        #expect(engine.name == "openai-compatible")
        #expect(engine.modelID == "ok")
        let sampling = SamplingParameters(maxTokens: 7, temperature: 0.5, topK: 20, topP: 0.8, repetitionPenalty: 1.2, seed: 99, stop: ["\n\n"])
        let streamed = Mutex<[String]>([])
        let result = try await engine.generate(
            GenerationRequest(id: "job-1", prompt: .chat([.system("be brief"), .user("hi")]), sampling: sampling),
            onText: { piece in streamed.withLock { $0.append(piece) } })
        let echo = try JSONDecoder().decode(Echo.self, from: Data(result.text.utf8))
        #expect(echo.path == "/v1/chat/completions")
        #expect(echo.auth == "Bearer sekret")
        #expect(echo.body["model"] == .string("ok"))
        #expect(echo.body["max_tokens"] == .number(7))
        #expect(echo.body["temperature"] == .number(0.5))
        #expect(echo.body["top_k"] == .number(20))
        #expect(echo.body["seed"] == .number(99))
        #expect(echo.body["stop"] == .array([.string("\n\n")]))
        #expect(echo.body["stream"] == .bool(true)) // onText given: streamed
        #expect(echo.body["stream_options"] == .object(["include_usage": .bool(true)]))
        #expect(echo.body["messages"] == .array([
            .object(["role": .string("system"), "content": .string("be brief")]),
            .object(["role": .string("user"), "content": .string("hi")]),
        ]))
        #expect(result.promptTokens == 21)
        #expect(result.completionTokens == 3)
        #expect(result.finishReason == .length)
        #expect(result.model == "streamed-ok")
        #expect(result.timings.totalMilliseconds >= result.timings.firstTokenMilliseconds)
        #expect(streamed.withLock { $0.count } == 3)
        #expect(streamed.withLock { $0.joined() } == result.text)
    }

    @Test func textPromptsUseCompletionsAndBaseURLMayEndInV1() async throws {
        let server = try FakeOpenAIServer()
        let engine = server.engine(base: "http://127.0.0.1:\(server.port)/v1/")
        let result = try await engine.generate(GenerationRequest(id: "job-2", prompt: .text("Once upon"), sampling: .greedy(maxTokens: 3)))
        let echo = try JSONDecoder().decode(Echo.self, from: Data(result.text.utf8))
        #expect(echo.path == "/v1/completions")
        #expect(echo.auth == nil)
        #expect(echo.body["prompt"] == .string("Once upon"))
        #expect(echo.body["messages"] == nil)
        #expect(echo.body["top_k"] == nil) // greedy: top_k 0 is not sent
        #expect(echo.body["stream"] == .bool(false)) // no onText: one JSON response
        #expect(result.finishReason == .length)
        #expect(result.timings.promptMilliseconds == 4.5)
        #expect(result.timings.decodeMilliseconds == 20.25)
    }

    @Test(arguments: [
        ("fail500", InferenceError.Kind.backendError(status: 500), true),
        ("ratelimit", InferenceError.Kind.backendError(status: 429), true),
        ("missing", InferenceError.Kind.unknownModel, false),
        ("bad", InferenceError.Kind.invalidRequest, false),
        ("garbage", InferenceError.Kind.backendError(status: 0), false),
    ])
    func httpFailuresAreClassified(model: String, kind: InferenceError.Kind, retriable: Bool) async throws {
        let server = try FakeOpenAIServer()
        let error = await #expect(throws: InferenceError.self) {
            _ = try await server.engine(model: model).generate(GenerationRequest(id: "job-3", prompt: .chat([.user("x")])))
        }
        #expect(error?.kind == kind)
        #expect(error?.isRetriable == retriable)
        if model == "fail500" { #expect(error?.detail.contains("boom") == true) }
    }

    @Test func nonStreamedChatMapsUsageAndFinishReason() async throws {
        let server = try FakeOpenAIServer()
        let result = try await server.engine().generate(GenerationRequest(id: "job-8", prompt: .chat([.user("hi")])))
        #expect(result.promptTokens == 12)
        #expect(result.completionTokens == 5)
        #expect(result.finishReason == .stop)
        #expect(result.model == "served-ok")
    }

    @Test func streamedTextCompletionAndStreamedFailure() async throws {
        let server = try FakeOpenAIServer()
        let pieces = Mutex<[String]>([])
        let result = try await server.engine().generate(GenerationRequest(id: "job-9", prompt: .text("Once")),
                                                        onText: { piece in pieces.withLock { $0.append(piece) } })
        let echo = try JSONDecoder().decode(Echo.self, from: Data(result.text.utf8))
        #expect(echo.path == "/v1/completions")
        #expect(pieces.withLock { $0.joined() } == result.text)
        #expect(result.completionTokens == 3)
        let error = await #expect(throws: InferenceError.self) {
            _ = try await server.engine(model: "fail500").generate(GenerationRequest(id: "job-10", prompt: .chat([.user("x")])), onText: { _ in })
        }
        #expect(error?.kind == .backendError(status: 500))
        #expect(error?.detail.contains("boom") == true)
    }

    @Test func slowServerTimesOut() async throws {
        let server = try FakeOpenAIServer()
        let error = await #expect(throws: InferenceError.self) {
            _ = try await server.engine(model: "slow", timeout: .milliseconds(500)).generate(GenerationRequest(id: "job-4", prompt: .chat([.user("x")])))
        }
        #expect(error?.kind == .timeout)
        #expect(error?.isRetriable == true)
    }

    @Test func closedPortIsUnreachable() async throws {
        let server = try FakeOpenAIServer()
        let engine = server.engine(base: "http://127.0.0.1:\(server.closedPort)")
        let error = await #expect(throws: InferenceError.self) {
            _ = try await engine.generate(GenerationRequest(id: "job-5", prompt: .text("x")))
        }
        #expect(error?.kind == .backendUnreachable)
        #expect(error?.isRetriable == true)
    }

    @Test func cancellationEndsTheRequest() async throws {
        let server = try FakeOpenAIServer()
        let engine = server.engine(model: "slow", timeout: .seconds(30))
        let task = Task { try await engine.generate(GenerationRequest(id: "job-6", prompt: .chat([.user("x")]))) }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        let result = try await task.value
        #expect(result.finishReason == .cancelled)
        #expect(result.text.isEmpty)
        #expect(throws: InferenceError.self) { try result.throwIfCancelled() }

        let streamed = Task { try await engine.generate(GenerationRequest(id: "job-6s", prompt: .chat([.user("x")])), onText: { _ in }) }
        try await Task.sleep(for: .milliseconds(300))
        streamed.cancel()
        #expect(try await streamed.value.finishReason == .cancelled)
    }

    @Test func invalidSamplingIsRejectedBeforeSending() async throws {
        let engine = OpenAICompatibleEngine(configuration: .init(baseURL: URL(string: "http://127.0.0.1:9")!, model: "m"))
        let error = await #expect(throws: InferenceError.self) {
            _ = try await engine.generate(GenerationRequest(id: "job-7", prompt: .text("x"), sampling: SamplingParameters(topP: 3)))
        }
        #expect(error?.kind == .invalidRequest)
    }
}
