import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
@testable import Pipeline

/// Runs blocking socket work on a thread of its own (never on the cooperative pool).
private func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

/// One raw HTTP exchange: connect, send `parts` (pausing `pause` between them), read to close.
private func rawExchange(_ port: UInt16, _ parts: [[UInt8]], pause: Duration = .zero) async -> (status: Int?, text: String) {
    await offPool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { return (nil, "connect failed") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        for (i, part) in parts.enumerated() {
            if i > 0 && pause > .zero { usleep(UInt32(pause.milliseconds * 1000)) }
            _ = part.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += chunk[..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        // Skip an interim 100 Continue.
        var final = Substring(text)
        if final.hasPrefix("HTTP/1.1 100"), let end = final.range(of: "\r\n\r\n") { final = final[end.upperBound...] }
        let words = final.prefix { $0 != "\r" }.split(separator: " ")
        return (words.count >= 2 ? Int(words[1]) : nil, String(final))
    }
}

private func post(_ path: String, body: String, extra: String = "") -> [UInt8] {
    Array("POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)".utf8)
}

/// The listener's prefix routes (bodies, answers from another thread, limits) and the gateway's
/// pure parts (request parsing, routing, tokens, the callback allow-list, HMAC), no broker.
@Suite struct GatewayLogicTests {
    /// A listener whose /v1 handler echoes the body after `delay`, from another thread.
    final class EchoServer: Sendable {
        let listener: HTTPListener
        let port: UInt16
        init(delay: Duration = .zero, maxBodyBytes: Int = 1024, requestTimeout: Duration = .seconds(2),
             handlerTimeout: Duration = .seconds(5)) throws {
            listener = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: "127.0.0.1", port: 0),
                                                         requestTimeout: requestTimeout, maxBodyBytes: maxBodyBytes,
                                                         handlerTimeout: handlerTimeout))
            listener.serveOperations(metrics: MetricsRegistry()) { .ready }
            listener.renderErrors { status, message in Problem(status: status, detail: message).response() }
            listener.routePrefix("/v1") { request, responder in
                Thread.detachNewThread {
                    if delay > .zero { usleep(UInt32(delay.milliseconds * 1000)) }
                    responder.respond(HTTPResponse(status: 200, text: "\(request.method) \(request.path) [\(String(decoding: request.body, as: UTF8.self))]"))
                    responder.respond(HTTPResponse(status: 500, text: "a second answer is dropped"))
                }
            }
            port = try listener.start().port
        }
        deinit { listener.stop() }
    }

    @Test func prefixRoutesReadBodiesAndAnswerFromAnotherThread() async throws {
        let server = try EchoServer(delay: .milliseconds(200))
        let plain = await rawExchange(server.port, [Array("GET /healthz HTTP/1.1\r\n\r\n".utf8)])
        #expect(plain.status == 200, "plain routes keep working: \(plain.text)")
        let echoed = await rawExchange(server.port, [post("/v1/jobs", body: #"{"a":1}"#)])
        #expect(echoed.status == 200 && echoed.text.hasSuffix(#"POST /v1/jobs [{"a":1}]"#), "\(echoed.text)")
        // The body in pieces, with a head asking for 100 Continue first.
        let bytes = post("/v1/jobs/x", body: "hello world", extra: "Expect: 100-continue\r\n")
        let split = bytes.count - 6
        let pieces = await rawExchange(server.port, [Array(bytes[..<split]), Array(bytes[split...])], pause: .milliseconds(100))
        #expect(pieces.status == 200 && pieces.text.hasSuffix("POST /v1/jobs/x [hello world]"), "\(pieces.text)")
        // Many at once: each waits without a thread, all answered.
        let many = await withTaskGroup(of: Int?.self) { group in
            for i in 0..<40 { group.addTask { await rawExchange(server.port, [post("/v1/\(i)", body: "\(i)")]).status } }
            return await group.reduce(into: [Int?]()) { $0.append($1) }
        }
        #expect(many.allSatisfy { $0 == 200 } && many.count == 40)
        #expect(await rawExchange(server.port, [Array("GET /v2 HTTP/1.1\r\n\r\n".utf8)]).status == 404)
    }

    @Test func prefixRouteLimits() async throws {
        let server = try EchoServer(delay: .seconds(3), maxBodyBytes: 100, requestTimeout: .milliseconds(500), handlerTimeout: .seconds(1))
        let big = await rawExchange(server.port, [Array("POST /v1/jobs HTTP/1.1\r\nContent-Length: 101\r\n\r\n".utf8)])
        #expect(big.status == 413 && big.text.contains("application/problem+json") && big.text.contains("limit is 100"), "\(big.text)")
        let chunked = await rawExchange(server.port, [Array("POST /v1/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8)])
        #expect(chunked.status == 411, "\(chunked.text)")
        // A body that never completes: cut off by the total deadline.
        let slow = await rawExchange(server.port, [Array("POST /v1/jobs HTTP/1.1\r\nContent-Length: 50\r\n\r\nabc".utf8)])
        #expect(slow.status == 408, "\(slow.text)")
        // A handler slower than the handler timeout: 504.
        let late = await rawExchange(server.port, [post("/v1/jobs", body: "x")])
        #expect(late.status == 504, "\(late.text)")
    }

    @Test func requestsBecomeJobsLikeLeveeSubmit() throws {
        let request = try JobRequest.parse(Array(#"{"messages":[{"role":"user","content":"hi"}],"params":{"max_tokens":8},"deadline_seconds":60}"#.utf8)).get()
        let job = try request.job(defaultTenant: "default", defaultModel: "m", headerIdempotencyKey: "order-7", limits: JobLimits())
        #expect(job.jobID == JobID.derived(tenant: "default", idempotencyKey: "order-7"))
        #expect(job.kind == .chat && job.model == "m" && job.params.maxTokens == 8 && job.idempotencyKey == "order-7")
        #expect(job.deadline.map { job.submittedAt.milliseconds(until: $0) } ?? 0 >= 59_000)
        let unknown = JobRequest.parse(Array(#"{"prompt":"x","max_token":3}"#.utf8))
        #expect(throws: JobValidationError.self) { try unknown.get() }
        if case .failure(let e) = unknown { #expect(e.problems.first?.contains("unknown field 'max_token'") == true) }
        if case .failure(let e) = JobRequest.parse(Array(#"{"prompt":5}"#.utf8)) { #expect(e.problems.first?.contains("prompt") == true) } else { Issue.record("a number is not a prompt") }
        #expect(throws: JobValidationError.self) {
            try JobRequest.parse(Array(#"{"prompt":"x","input":{"prompt":"y"}}"#.utf8)).get()
                .job(defaultTenant: "t", defaultModel: "m", headerIdempotencyKey: nil, limits: JobLimits())
        }
        #expect(throws: JobValidationError.self) {
            try JobRequest.parse(Array(#"{"prompt":"x","callback_url":"ftp://h/x"}"#.utf8)).get()
                .job(defaultTenant: "t", defaultModel: "m", headerIdempotencyKey: nil, limits: JobLimits())
        }
    }

    @Test func routesAndTokens() {
        func route(_ method: String, _ path: String) -> String {
            let request = HTTPRequest(method: method, target: path, path: path, query: nil, headers: [:])
            guard let r = GatewayRoute(request) else { return "none" }
            switch r {
            case .submit: return "submit"
            case .status: return "status"
            case .trace: return "trace"
            case .cancel: return "cancel"
            case .badID: return "badID"
            case .methodNotAllowed(let allow): return "405 \(allow)"
            }
        }
        let id = "019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07"
        #expect(route("POST", "/v1/jobs") == "submit")
        #expect(route("GET", "/v1/jobs") == "405 POST")
        #expect(route("GET", "/v1/jobs/\(id)") == "status")
        #expect(route("DELETE", "/v1/jobs/\(id)") == "cancel")
        #expect(route("GET", "/v1/jobs/\(id)/trace") == "trace")
        #expect(route("POST", "/v1/jobs/\(id)") == "405 GET, HEAD, DELETE")
        #expect(route("GET", "/v1/jobs/nope") == "badID")
        #expect(route("GET", "/v1/other") == "none" && route("GET", "/v1/jobs/\(id)/x") == "none")
        #expect(Gateway.authorized("Bearer s3cret", tokens: ["a", "s3cret"]))
        #expect(!Gateway.authorized("Bearer s3cre", tokens: ["s3cret"]) && !Gateway.authorized("Bearer s3crets", tokens: ["s3cret"]))
        #expect(!Gateway.authorized(nil, tokens: ["s3cret"]) && !Gateway.authorized("Basic s3cret", tokens: ["s3cret"]))
        #expect(Gateway.queryValue("a=1&wait=2.5", "wait") == "2.5" && Gateway.queryValue(nil, "wait") == nil)
    }

    @Test func callbackAllowList() {
        let none = CallbackAllowList()
        #expect(none.refusal("https://hooks.example.com/x")?.contains("not enabled") == true)
        let list = CallbackAllowList(parsing: "*.example.com, api.partner.io:8443, 127.0.0.1:9100")
        #expect(list.refusal("https://hooks.example.com/done") == nil)
        #expect(list.refusal("https://example.com/done") != nil, "the wildcard is for subdomains")
        #expect(list.refusal("https://api.partner.io:8443/cb") == nil)
        #expect(list.refusal("https://api.partner.io/cb") != nil, "another port")
        #expect(list.refusal("http://127.0.0.1:9100/cb") == nil, "loopback listed exactly")
        #expect(list.refusal("http://127.0.0.1:9101/cb") != nil && list.refusal("http://localhost:9100/cb") != nil)
        #expect(CallbackAllowList(parsing: "*.localhost").refusal("http://a.localhost/x") != nil, "wildcards never reach loopback")
        #expect(list.refusal("http://user:pw@hooks.example.com/x") != nil)
        #expect(list.refusal("file:///etc/passwd") != nil)
    }

    /// RFC 4231 vectors, and Python's hmac module on keys longer than a block and odd messages.
    @Test func hmacSHA256MatchesRFC4231AndPython() async throws {
        let key1 = [UInt8](repeating: 0x0b, count: 20)
        #expect(HMACSHA256.hex(key: key1, message: Array("Hi There".utf8))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(HMACSHA256.hex(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        let cases: [(String, String)] = [("", ""), ("k", "hello"), (String(repeating: "long key ", count: 20), "m"),
                                         (String(repeating: "x", count: 64), String(repeating: "y", count: 1000)),
                                         ("secret", "1733300000.{\"job_id\":\"a\",\"state\":\"succeeded\"}")]
        let script = "import hmac,hashlib,sys,json\nfor k,m in json.load(sys.stdin): print(hmac.new(k.encode(),m.encode(),hashlib.sha256).hexdigest())"
        let expected: [String] = await offPool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script]
            let input = Pipe(), output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            guard (try? process.run()) != nil else { return [] }
            let json = try! JSONSerialization.data(withJSONObject: cases.map { [$0.0, $0.1] })
            input.fileHandleForWriting.write(json)
            try? input.fileHandleForWriting.close()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        }
        #expect(expected.count == cases.count, "python3 did not answer")
        for (i, c) in cases.enumerated() where i < expected.count {
            #expect(HMACSHA256.hex(key: Array(c.0.utf8), message: Array(c.1.utf8)) == expected[i], "case \(i)")
        }
        let signature = CallbackDispatcher.signature(secret: Array("secret".utf8), body: Array("{\"job_id\":\"a\",\"state\":\"succeeded\"}".utf8), at: 1733300000)
        #expect(signature == "t=1733300000,v1=" + expected.last!)
    }

    @Test func pendingStateFromTheTrace() {
        let id = JobID.make()
        func event(_ stage: TraceStage) -> TraceEvent { TraceEvent(jobID: id, stage: stage, attempt: 1) }
        #expect(Gateway.pendingState([event(.submitted), event(.accepted)]) == "queued")
        #expect(Gateway.pendingState([event(.submitted), event(.accepted), event(.received), event(.inferenceStarted)]) == "running")
        #expect(Gateway.pendingState([event(.received), event(.handedBack)]) == "queued")
        #expect(Gateway.pendingState([event(.received), event(.retryScheduled)]) == "queued")
    }
}
