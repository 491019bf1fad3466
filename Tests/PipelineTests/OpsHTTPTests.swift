import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
@testable import Pipeline

/// A listener on 127.0.0.1 with a free port, serving the operational routes.
private final class TestServer: Sendable {
    let listener: HTTPListener
    let metrics = MetricsRegistry()
    let readiness = ReadinessState()
    let scrapes: Counter
    let port: UInt16

    init(requestTimeout: Duration = .seconds(2), maxConnections: Int = 64, keepAliveIdle: Duration? = nil, maxRequestsPerConnection: Int = 1000) throws {
        var configuration = HTTPListener.Configuration(address: HTTPListenerAddress(host: "127.0.0.1", port: 0),
                                                       requestTimeout: requestTimeout, maxConnections: maxConnections, keepAliveIdle: keepAliveIdle)
        configuration.maxRequestsPerConnection = maxRequestsPerConnection
        listener = HTTPListener(configuration: configuration)
        scrapes = metrics.counter("levee_test_scrapes_total", help: "Times /metrics was served in this test.")
        let readiness = self.readiness, scrapes = self.scrapes
        listener.serveOperations(metrics: metrics) {
            scrapes.increment()
            return Readiness(reasons: readiness.reasons.withLock { $0 })
        }
        port = try listener.start().port
    }

    var base: String { "http://127.0.0.1:\(port)" }

    deinit { listener.stop() }
}

private final class ReadinessState: Sendable {
    let reasons = Mutex<[String]>(["model not loaded", "no partitions assigned"])
}

/// A real HTTP client: Foundation's URLSession (libcurl underneath on Linux).
private let session: URLSession = {
    let configuration = URLSessionConfiguration.ephemeral
    configuration.httpMaximumConnectionsPerHost = 64
    configuration.timeoutIntervalForRequest = 60
    return URLSession(configuration: configuration)
}()

private func fetch(_ url: String, method: String = "GET") async throws -> (status: Int, body: String, headers: [String: String]) {
    var request = URLRequest(url: try #require(URL(string: url)))
    request.httpMethod = method
    let (data, response) = try await session.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    var headers: [String: String] = [:]
    for (key, value) in http.allHeaderFields { headers[String(describing: key).lowercased()] = String(describing: value) }
    return (http.statusCode, String(decoding: data, as: UTF8.self), headers)
}

/// A raw TCP client for what no polite client sends: garbage, half requests, slow drips.
private final class RawConnection {
    let fd: Int32

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        // A bound on how long a read may block, so a broken listener fails the test instead of hanging it.
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends bytes; false once the peer has closed or reset the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Whether nothing has arrived yet (and the connection is not closed).
    var nothingReceivedYet: Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }

    /// Everything until the server closes; nil status if the connection closed or reset without a response.
    func readResponse() -> (status: Int?, text: String) {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += chunk[..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        let parts = text.prefix { $0 != "\r" }.split(separator: " ")
        let status = parts.count >= 2 && parts[0].hasPrefix("HTTP/1.") ? Int(parts[1]) : nil
        return (status, text)
    }

    /// One response, read by its Content-Length (the connection may stay open): status, the
    /// Connection header (lower-cased), body. Nil when the server closed without a whole response.
    func readOne() -> (status: Int, connection: String, body: String)? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: pending, as: UTF8.self)
            if let split = text.range(of: "\r\n\r\n") {
                let head = text[..<split.lowerBound].lowercased()
                let fields = head.split(separator: "\r\n")
                let length = fields.first { $0.hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
                let headBytes = text[..<split.upperBound].utf8.count
                if pending.count >= headBytes + length {
                    let body = String(decoding: pending[headBytes..<(headBytes + length)], as: UTF8.self)
                    pending.removeFirst(headBytes + length)
                    let status = Int(fields.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
                    let connection = fields.first { $0.hasPrefix("connection:") }.map { $0.dropFirst(11).trimmingCharacters(in: .whitespaces) } ?? ""
                    return (status, connection, body)
                }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            pending += chunk[..<n]
        }
    }
    private var pending: [UInt8] = []

    /// Whether the server has closed the connection (reads until end of stream or the 30 s bound).
    var closedByServer: Bool {
        var chunk = [UInt8](repeating: 0, count: 256)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    deinit { close(fd) }
}

private func exchange(_ port: UInt16, _ bytes: [UInt8]) throws -> (status: Int?, text: String) {
    let connection = try RawConnection(port: port)
    connection.send(bytes)
    return connection.readResponse()
}

@Suite(.serialized) struct OpsHTTPTests {
    @Test func healthReadinessAndMetricsRoutes() async throws {
        let server = try TestServer()

        let health = try await fetch(server.base + "/healthz")
        #expect(health.status == 200)
        #expect(health.body == "ok\n")
        #expect(health.headers["connection"]?.lowercased() == "close")

        let notReady = try await fetch(server.base + "/readyz")
        #expect(notReady.status == 503)
        #expect(notReady.body.contains("model not loaded") && notReady.body.contains("no partitions assigned"))
        server.readiness.reasons.withLock { $0 = [] }
        let ready = try await fetch(server.base + "/readyz?verbose=1")
        #expect(ready.status == 200, "the query string does not change the route")

        let metrics = try await fetch(server.base + "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == MetricsRegistry.contentType)
        let first = try Exposition(parsing: metrics.body)
        let scrapesBefore = try #require(first.value("levee_test_scrapes_total"))
        _ = try await fetch(server.base + "/readyz")
        let second = try Exposition(parsing: try await fetch(server.base + "/metrics").body)
        #expect(second.value("levee_test_scrapes_total") == scrapesBefore + 1, "the counter moved between scrapes")

        let head = try await fetch(server.base + "/metrics", method: "HEAD")
        #expect(head.status == 200)
        #expect(head.body.isEmpty, "HEAD has no body")
        #expect(Int(head.headers["content-length"] ?? "") == metrics.body.utf8.count, "HEAD announces the GET length")
    }

    @Test func unknownPathsAndMethods() async throws {
        let server = try TestServer()
        let missing = try await fetch(server.base + "/nope")
        #expect(missing.status == 404)
        for method in ["POST", "PUT", "DELETE"] {
            let refused = try await fetch(server.base + "/metrics", method: method)
            #expect(refused.status == 405, "\(method)")
            #expect(refused.headers["allow"] == "GET, HEAD")
        }
        #expect(try await fetch(server.base + "/nope", method: "POST").status == 404)
    }

    @Test(arguments: [
        ("HELLO\r\n\r\n", 400),
        ("GET /healthz\r\n\r\n", 400),
        ("GET healthz HTTP/1.1\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1 extra\r\n\r\n", 400),
        ("G(T /healthz HTTP/1.1\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ("GET /healthz XTTP/1.1\r\n\r\n", 400),
        ("GET /healthz HTTP/2.0\r\n\r\n", 505),
        ("\u{16}\u{03}\u{01}\u{02}\u{00}\r\n\r\n", 400),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        ("GET /healthz HTTP/1.1\nHost: lax\n\n", 200),
    ])
    func malformedRequestsGet400(request: String, expected: Int) throws {
        let server = try TestServer()
        let answer = try exchange(server.port, Array(request.utf8))
        #expect(answer.status == expected, "\(request.debugDescription) → \(answer.text.debugDescription)")
    }

    @Test func oversizeHeadsGet431() throws {
        let server = try TestServer()
        let huge = "GET /healthz HTTP/1.1\r\nX-Filler: " + String(repeating: "a", count: 9000) + "\r\n\r\n"
        #expect(try exchange(server.port, Array(huge.utf8)).status == 431)
        // Just under the limit is fine.
        let fits = "GET /healthz HTTP/1.1\r\nX-Filler: " + String(repeating: "a", count: 8000) + "\r\n\r\n"
        #expect(try exchange(server.port, Array(fits.utf8)).status == 200)
    }

    @Test func stalledClientsDoNotBlockOthersAndAreClosedAfterTheTimeout() async throws {
        // The timeout is long so that "others were answered first" has a wide margin on a busy machine.
        let server = try TestServer(requestTimeout: .seconds(8))
        var stalled: [RawConnection] = []
        for _ in 0..<5 {
            let c = try RawConnection(port: server.port)
            c.send("GET /healthz HTTP/1.1\r\nHost: stalled\r\n")  // no blank line: the head never ends
            stalled.append(c)
        }
        for _ in 0..<5 {
            #expect(try await fetch(server.base + "/healthz").status == 200)
        }
        for c in stalled {
            #expect(c.nothingReceivedYet, "stalled clients are still waiting while the others were served")
        }
        for c in stalled {
            let answer = c.readResponse()
            #expect(answer.status == 408, "the stalled client gets 408 and is closed: \(answer.text.debugDescription)")
        }
        #expect(try await fetch(server.base + "/healthz").status == 200)
    }

    @Test func aDrippingClientIsCutOffByTheTotalDeadline() async throws {
        // One byte every 100 ms never trips a per-read timeout of 1 s, only a deadline for the whole head.
        let server = try TestServer(requestTimeout: .seconds(1))
        let c = try RawConnection(port: server.port)
        let request = Array("GET /healthz HTTP/1.1\r\nHost: drip\r\nX-Slow: 1234567890\r\n\r\n".utf8)
        for byte in request {
            guard c.send([byte]) else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let answer = c.readResponse()
        #expect(answer.status != 200, "a head that took longer than the deadline is not served")
        if let status = answer.status { #expect(status == 408) }
    }

    @Test func fiftyConcurrentClients() async throws {
        let server = try TestServer()
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<50 {
                group.addTask {
                    let path = ["/metrics", "/healthz", "/readyz"][i % 3]
                    let answer = try await fetch(server.base + path)
                    return (answer.status, path == "/metrics" ? answer.body : "")
                }
            }
            var all: [(Int, String)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 50)
        #expect(results.allSatisfy { $0.0 == 200 || $0.0 == 503 })  // /readyz is 503: reasons are set
        #expect(results.filter { $0.0 == 200 }.count == 34)  // 17 /metrics + 17 /healthz
        for (_, body) in results where !body.isEmpty { _ = try Exposition(parsing: body) }
    }

    @Test func connectionsOverTheCapGet503OrAreClosed() throws {
        let server = try TestServer(requestTimeout: .seconds(30), maxConnections: 2)
        var a: RawConnection? = try RawConnection(port: server.port)
        a?.send("GET /healthz HTTP/1.1\r\n")
        let b = try RawConnection(port: server.port)
        b.send("GET /healthz HTTP/1.1\r\n")
        let third = try exchange(server.port, Array("GET /healthz HTTP/1.1\r\n\r\n".utf8))
        #expect(third.status == 503 || third.status == nil, "over the cap: refused, not served: \(third.text.debugDescription)")
        // Finishing one of the stalled requests frees a slot.
        a?.send("\r\n")
        #expect(a?.readResponse().status == 200)
        a = nil  // closing our side ends the server's lingering close, which still held the slot
        #expect(try exchange(server.port, Array("GET /healthz HTTP/1.1\r\n\r\n".utf8)).status == 200)
        _ = b
    }

    @Test func keptConnectionsServeRequestsInTurnAndPipelined() throws {
        let server = try TestServer(keepAliveIdle: .seconds(20))
        let c = try RawConnection(port: server.port)
        for _ in 0..<3 {
            c.send("GET /healthz HTTP/1.1\r\nHost: kept\r\n\r\n")
            let answer = try #require(c.readOne(), "an answer on the same connection")
            #expect(answer.status == 200 && answer.body == "ok\n" && answer.connection == "keep-alive", "\(answer)")
        }
        // Two requests in one write: both answered, in order, on the one connection.
        c.send("GET /readyz HTTP/1.1\r\nHost: kept\r\n\r\nGET /healthz HTTP/1.1\r\nHost: kept\r\n\r\n")
        let first = try #require(c.readOne()), second = try #require(c.readOne())
        #expect(first.status == 503 && first.body.contains("model not loaded"), "\(first)")
        #expect(second.status == 200 && second.body == "ok\n", "\(second)")
        // A client asking to close gets Connection: close and the end of the stream.
        c.send("GET /healthz HTTP/1.1\r\nHost: kept\r\nConnection: close\r\n\r\n")
        let last = try #require(c.readOne())
        #expect(last.status == 200 && last.connection == "close", "\(last)")
        #expect(c.closedByServer)
        // HTTP/1.0 without keep-alive closes; an error the listener answers itself closes too.
        let old = try RawConnection(port: server.port)
        old.send("GET /healthz HTTP/1.0\r\n\r\n")
        #expect(try #require(old.readOne()).connection == "close")
        #expect(old.closedByServer)
        let bad = try RawConnection(port: server.port)
        bad.send("NOT HTTP\r\n\r\n")
        #expect(try #require(bad.readOne()).status == 400)
        #expect(bad.closedByServer)
    }

    @Test func keptConnectionsCloseWhenIdleAtTheRequestLimitAndWhenTheListenerIsFull() throws {
        let server = try TestServer(requestTimeout: .seconds(30), maxConnections: 2, keepAliveIdle: .milliseconds(300), maxRequestsPerConnection: 2)
        // Idle past keepAliveIdle: closed without an answer (no 408 for a request never started).
        let idle = try RawConnection(port: server.port)
        idle.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try #require(idle.readOne()).connection == "keep-alive")
        let started = ContinuousClock.now
        #expect(idle.readOne() == nil, "closed, no 408")
        #expect(ContinuousClock.now - started < .seconds(20))
        // The second request of a connection limited to two is answered with close.
        let limited = try RawConnection(port: server.port)
        limited.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try #require(limited.readOne()).connection == "keep-alive")
        limited.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try #require(limited.readOne()).connection == "close")
        #expect(limited.closedByServer)
    }

    @Test func aFullListenerClosesAnIdleKeptConnectionForANewClient() throws {
        let server = try TestServer(requestTimeout: .seconds(30), maxConnections: 2, keepAliveIdle: .seconds(60))
        let kept = try RawConnection(port: server.port)
        kept.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try #require(kept.readOne()).connection == "keep-alive")
        let busy = try RawConnection(port: server.port)
        busy.send("GET /healthz HTTP/1.1\r\n")  // mid-request: holds the second slot
        try #require(busy.nothingReceivedYet)
        let newcomer = try RawConnection(port: server.port)
        newcomer.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try #require(newcomer.readOne()).status == 200, "served: the idle kept connection made room")
        #expect(kept.closedByServer)
        busy.send("\r\n")
        #expect(try #require(busy.readOne()).status == 200, "the request in progress was not the one closed")
    }

    @Test func stopClosesTheSocketAndStartRebinds() async throws {
        let server = try TestServer()
        let port = server.port
        #expect(try await fetch(server.base + "/healthz").status == 200)

        // A second listener on the same port fails with a typed error.
        let rival = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: "127.0.0.1", port: port)))
        #expect { try rival.start() } throws: { ($0 as? HTTPListenerError)?.kind == .addressInUse }
        #expect { try server.listener.start() } throws: { ($0 as? HTTPListenerError)?.kind == .alreadyRunning }

        server.listener.stop()
        server.listener.stop()  // twice is fine
        #expect(server.listener.port == nil)
        #expect(throws: POSIXError.self, "nothing listens after stop()") { _ = try RawConnection(port: port) }

        // Started again, on the same port now that it is free.
        rival.route("/healthz") { _ in HTTPResponse(status: 200, text: "rival\n") }
        try rival.start()
        defer { rival.stop() }
        let answer = try await fetch("http://127.0.0.1:\(port)/healthz")
        #expect(answer.status == 200 && answer.body == "rival\n")
    }

    @Test(arguments: ["9090", "nonsense", "1.2.3.4:", "1.2.3.4:port", "127.0.0.1:70000", "::1:9090", "[::1]9090"])
    func badAddressesAreRejected(text: String) {
        #expect { _ = try HTTPListenerAddress(parsing: text) } throws: { ($0 as? HTTPListenerError)?.kind == .badAddress }
    }

    @Test func addressesParse() throws {
        #expect(try HTTPListenerAddress(parsing: "0.0.0.0:9090") == HTTPListenerAddress(host: "0.0.0.0", port: 9090))
        #expect(try HTTPListenerAddress(parsing: ":9090") == HTTPListenerAddress(host: "0.0.0.0", port: 9090))
        #expect(try HTTPListenerAddress(parsing: "[::1]:0") == HTTPListenerAddress(host: "::1", port: 0))
        #expect(HTTPListenerAddress(host: "::", port: 9090).description == "[::]:9090")
    }

    @Test func anAddressNotOnThisHostFailsToBind() {
        // 203.0.113.0/24 is reserved for documentation: no interface here has it.
        let listener = HTTPListener(configuration: .init(address: HTTPListenerAddress(host: "203.0.113.7", port: 0)))
        #expect { try listener.start() } throws: { error in
            guard let e = error as? HTTPListenerError else { return false }
            return e.kind == .badAddress && e.description.contains("203.0.113.7")
        }
    }
}
