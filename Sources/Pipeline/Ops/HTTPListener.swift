#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Dispatch
import Foundation
import Synchronization

/// A small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`, on POSIX sockets.
///
/// It answers GET and HEAD with `Connection: close` (one request per connection), and it is
/// bounded so that a slow or hostile client cannot stall the worker that embeds it:
/// - one accept thread plus a fixed pool of handler threads; nothing runs on the Swift
///   concurrency pool, so a stuck client never takes a cooperative thread from the worker;
/// - each request head must arrive whole within `requestTimeout` (a total deadline, not a
///   per-read one, so a client dripping a byte a second is cut off too) and within
///   `maxRequestBytes`; each response must be written within the same time;
/// - at most `maxConnections` connections are open (served or waiting for a handler); the
///   accept thread answers any further one with 503 and closes it at once.
///
/// Routes are plain closures, registered before or after `start()`. Call `stop()` before
/// dropping the listener: the threads hold it until then.
public final class HTTPListener: Sendable {
    /// A route: runs on a handler thread, must not block for long.
    public typealias Route = @Sendable (HTTPRequest) -> HTTPResponse

    public struct Configuration: Sendable {
        public var address: HTTPListenerAddress
        /// Time allowed for a whole request head to arrive, and for the response to be written.
        public var requestTimeout: Duration
        /// Largest request head accepted (request line plus header fields); larger ones get 431.
        public var maxRequestBytes: Int
        /// Connections open at once (being served or queued); more get 503.
        public var maxConnections: Int
        /// Threads serving connections.
        public var handlerThreads: Int

        public init(address: HTTPListenerAddress = HTTPListenerAddress(host: "0.0.0.0", port: 9090),
                    requestTimeout: Duration = .seconds(2), maxRequestBytes: Int = 8192,
                    maxConnections: Int = 64, handlerThreads: Int = 2) {
            self.address = address
            self.requestTimeout = requestTimeout
            self.maxRequestBytes = maxRequestBytes
            self.maxConnections = maxConnections
            self.handlerThreads = handlerThreads
        }
    }

    public let configuration: Configuration
    private let routes = Mutex<[String: Route]>([:])
    private let state = Mutex(State())

    /// Resources of one run, between `start()` and `stop()`.
    private struct Running: Sendable {
        var listenFD: Int32
        var wakeRead: Int32
        var wakeWrite: Int32
        var bound: HTTPListenerAddress
        let work: DispatchSemaphore
        let threads: DispatchGroup
    }

    private struct State: Sendable {
        var running: Running?
        var stopping = false
        /// Accepted connections waiting for a handler thread, oldest first.
        var queued: [Int32] = []
        /// Connections a handler is serving now.
        var active: Set<Int32> = []
        var openCount: Int { queued.count + active.count }
    }

    public init(configuration: Configuration = Configuration()) {
        var configuration = configuration
        configuration.maxRequestBytes = max(configuration.maxRequestBytes, 64)
        configuration.maxConnections = max(configuration.maxConnections, 1)
        configuration.handlerThreads = max(configuration.handlerThreads, 1)
        self.configuration = configuration
    }

    /// Serves `handler` for GET and HEAD on `path` (exact match, query string ignored).
    public func route(_ path: String, _ handler: @escaping Route) {
        routes.withLock { $0[path] = handler }
    }

    /// The address actually bound (with the kernel's port when 0 was asked), while running.
    public var boundAddress: HTTPListenerAddress? { state.withLock { $0.running?.bound } }

    /// The bound port, while running.
    public var port: UInt16? { boundAddress?.port }

    /// Binds, listens and starts the threads. Returns the bound address.
    @discardableResult
    public func start() throws(HTTPListenerError) -> HTTPListenerAddress {
        let address = configuration.address
        if state.withLock({ $0.running != nil }) {
            throw HTTPListenerError(.alreadyRunning, address: address.description, detail: "already running")
        }
        let (listenFD, bound) = try Self.bind(address)
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            let code = errno
            close(listenFD)
            throw HTTPListenerError(.system, address: address.description, errno: code, detail: "pipe: \(Self.describe(code))")
        }
        for fd in pipeFDs + [listenFD] { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(listenFD, F_SETFL, fcntl(listenFD, F_GETFL) | O_NONBLOCK)

        let running = Running(listenFD: listenFD, wakeRead: pipeFDs[0], wakeWrite: pipeFDs[1], bound: bound,
                              work: DispatchSemaphore(value: 0), threads: DispatchGroup())
        let raced = state.withLock { s -> Bool in
            guard s.running == nil else { return true }
            s.running = running
            s.stopping = false
            return false
        }
        if raced {
            for fd in [listenFD, pipeFDs[0], pipeFDs[1]] { close(fd) }
            throw HTTPListenerError(.alreadyRunning, address: address.description, detail: "already running")
        }

        spawn("levee-http-accept", group: running.threads) { self.acceptLoop(running) }
        for i in 0..<configuration.handlerThreads {
            spawn("levee-http-\(i)", group: running.threads) { self.handlerLoop(running) }
        }
        return bound
    }

    /// Closes the listening socket, cuts open connections short, and waits for every thread.
    /// Safe to call twice; `start()` may be called again afterwards.
    public func stop() {
        let taken = state.withLock { s -> (Running, [Int32])? in
            guard let running = s.running, !s.stopping else { return nil }
            s.stopping = true
            let queued = s.queued
            s.queued = []
            // Wakes a handler blocked on a slow client: its next poll sees the shutdown at once.
            // Under the lock, because handlers close their descriptor under it: the number
            // cannot have been reused by another part of the process.
            for fd in s.active { _ = shutdown(fd, Int32(SHUT_RDWR)) }
            return (running, queued)
        }
        guard let (running, queued) = taken else { return }
        var byte: UInt8 = 1
        _ = write(running.wakeWrite, &byte, 1)
        for _ in 0..<configuration.handlerThreads { running.work.signal() }
        for fd in queued { close(fd) }
        running.threads.wait()
        close(running.listenFD)
        close(running.wakeRead)
        close(running.wakeWrite)
        state.withLock { s in
            s.running = nil
            s.stopping = false
            s.active = []
        }
    }

    // MARK: Threads

    private func spawn(_ name: String, group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
        group.enter()
        let thread = Thread {
            body()
            group.leave()
        }
        thread.name = name
        thread.start()
    }

    private func acceptLoop(_ running: Running) {
        var fds = [pollfd(fd: running.listenFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: running.wakeRead, events: Int16(POLLIN), revents: 0)]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 || state.withLock({ $0.stopping }) { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            // Drain the accept queue: the listening socket is non-blocking.
            while true {
                let fd = accept(running.listenFD, nil, nil)
                if fd < 0 {
                    let code = errno
                    if code == EINTR || code == ECONNABORTED { continue }
                    if code == EMFILE || code == ENFILE {
                        // Out of descriptors: back off briefly instead of spinning on poll.
                        usleep(50_000)
                    }
                    break
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                let admitted = state.withLock { s -> Bool in
                    guard !s.stopping, s.openCount < configuration.maxConnections else { return false }
                    s.queued.append(fd)
                    return true
                }
                if admitted {
                    running.work.signal()
                } else {
                    reject(fd)
                }
            }
        }
    }

    /// Over capacity: one non-blocking attempt at a 503, then close. Never waits on the client.
    private func reject(_ fd: Int32) {
        let response = HTTPResponse(status: 503, text: "too many connections\n", headers: [("Retry-After", "1")])
        let bytes = response.serialized(head: false)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        _ = shutdown(fd, Int32(SHUT_WR))
        close(fd)
    }

    private func handlerLoop(_ running: Running) {
        while true {
            running.work.wait()
            let next = state.withLock { s -> Int32?? in
                if s.stopping { return .some(nil) }
                guard !s.queued.isEmpty else { return nil }
                let fd = s.queued.removeFirst()
                s.active.insert(fd)
                return .some(fd)
            }
            guard let taken = next else { continue }
            guard let fd = taken else { return }
            serve(fd)
            // Close under the lock, so stop() never shuts down a number already reused.
            state.withLock { s in
                s.active.remove(fd)
                close(fd)
            }
        }
    }

    // MARK: One connection

    private func serve(_ fd: Int32) {
        let deadline = ContinuousClock.now + configuration.requestTimeout
        let head: [UInt8]
        switch readHead(fd, deadline: deadline) {
        case .head(let bytes): head = bytes
        case .closed: return
        case .timedOut:
            respond(fd, HTTPResponse(status: 408, text: "request head not received in time\n"), head: false)
            return
        case .tooLarge:
            respond(fd, HTTPResponse(status: 431, text: "request head larger than \(configuration.maxRequestBytes) bytes\n"), head: false)
            return
        }
        let request: HTTPRequest
        switch HTTPRequestParser.parse(head) {
        case .failure(let problem):
            respond(fd, HTTPResponse(status: problem.status, text: problem.message + "\n"), head: false)
            return
        case .success(let parsed): request = parsed
        }
        let isHead = request.method == "HEAD"
        guard let route = routes.withLock({ $0[request.path] }) else {
            respond(fd, HTTPResponse(status: 404, text: "no route \(request.path)\n"), head: isHead)
            return
        }
        guard request.method == "GET" || isHead else {
            respond(fd, HTTPResponse(status: 405, text: "method \(request.method) not allowed\n",
                                     headers: [("Allow", "GET, HEAD")]), head: false)
            return
        }
        respond(fd, route(request), head: isHead)
    }

    private enum HeadRead {
        case head([UInt8])
        case closed
        case timedOut
        case tooLarge
    }

    private func readHead(_ fd: Int32, deadline: ContinuousClock.Instant) -> HeadRead {
        let limit = configuration.maxRequestBytes
        var buffer: [UInt8] = []
        buffer.reserveCapacity(min(limit, 1024))
        var chunk = [UInt8](repeating: 0, count: 2048)
        var scanned = 0
        while true {
            if let end = HTTPRequestParser.headEnd(buffer, from: scanned) { return .head(Array(buffer[..<end])) }
            scanned = max(0, buffer.count - 3)
            if buffer.count >= limit { return .tooLarge }
            guard waitFor(fd, events: Int16(POLLIN), until: deadline) else { return .timedOut }
            let want = min(chunk.count, limit - buffer.count)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
            if n > 0 {
                buffer.append(contentsOf: chunk[..<n])
            } else if n == 0 {
                return .closed
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                return .closed
            }
        }
    }

    /// Writes the response within the request timeout, then closes gracefully: half-close and
    /// discard what the client still sends for a moment, so that closing with unread input does
    /// not reset the connection and destroy the response before the client reads it.
    private func respond(_ fd: Int32, _ response: HTTPResponse, head: Bool) {
        let bytes = response.serialized(head: head)
        let deadline = ContinuousClock.now + configuration.requestTimeout
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                guard waitFor(fd, events: Int16(POLLOUT), until: deadline) else { return }
            } else {
                return
            }
        }
        _ = shutdown(fd, Int32(SHUT_WR))
        let lingerDeadline = min(deadline, ContinuousClock.now + .milliseconds(500))
        var scratch = [UInt8](repeating: 0, count: 4096)
        var discarded = 0
        while discarded < 65_536, waitFor(fd, events: Int16(POLLIN), until: lingerDeadline) {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                discarded += n
            } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                return
            }
        }
    }

    /// Polls one descriptor until `events` or the deadline. False on timeout, error or hang-up
    /// without data (a hang-up with data still reports readable, so the data is not lost).
    private func waitFor(_ fd: Int32, events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            if remaining <= .zero { return false }
            let ms = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            var p = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&p, 1, ms)
            if ready < 0 {
                if errno == EINTR { continue }
                return false
            }
            if ready == 0 { continue }  // re-check the deadline (poll may wake early)
            if p.revents & events != 0 { return true }
            return false  // POLLERR, POLLHUP or POLLNVAL without the wanted event
        }
    }

    // MARK: Binding

    private static func bind(_ address: HTTPListenerAddress) throws(HTTPListenerError) -> (Int32, HTTPListenerAddress) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, String(address.port), &hints, &result)
        guard rc == 0, let first = result else {
            throw HTTPListenerError(.badAddress, address: address.description,
                                    detail: "cannot resolve host \(address.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        let info = first.pointee
        let fd = socket(info.ai_family, info.ai_socktype, info.ai_protocol)
        guard fd >= 0 else {
            let code = errno
            throw HTTPListenerError(.system, address: address.description, errno: code, detail: "socket: \(describe(code))")
        }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.bind(fd, info.ai_addr, info.ai_addrlen) == 0 else {
            let code = errno
            close(fd)
            let kind: HTTPListenerError.Kind = switch code {
            case EADDRINUSE: .addressInUse
            case EADDRNOTAVAIL: .badAddress
            case EACCES: .permissionDenied
            default: .system
            }
            throw HTTPListenerError(kind, address: address.description, errno: code, detail: "bind: \(describe(code))")
        }
        guard listen(fd, 128) == 0 else {
            let code = errno
            close(fd)
            throw HTTPListenerError(code == EADDRINUSE ? .addressInUse : .system, address: address.description,
                                    errno: code, detail: "listen: \(describe(code))")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let port: UInt16 = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
            switch Int32(pointer.pointee.ss_family) {
            case AF_INET:
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            case AF_INET6:
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            default:
                return address.port
            }
        }
        return (fd, HTTPListenerAddress(host: address.host, port: port))
    }

    static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }
}

extension HTTPListener {
    /// Registers Levee's operational routes: `/metrics` (the registry in the Prometheus text
    /// format), `/healthz` (200 while the process can answer) and `/readyz` (200 when `readiness`
    /// has no reasons, else 503 listing them). The worker and the reconciler both call this.
    public func serveOperations(metrics: MetricsRegistry, readiness: @escaping @Sendable () -> Readiness) {
        route("/metrics") { _ in
            HTTPResponse(status: 200, contentType: MetricsRegistry.contentType, text: metrics.render())
        }
        route("/healthz") { _ in HTTPResponse(status: 200, text: "ok\n") }
        route("/readyz") { _ in
            let now = readiness()
            if now.isReady { return HTTPResponse(status: 200, text: "ready\n") }
            return HTTPResponse(status: 503, text: "not ready\n" + now.reasons.map { "- \($0)\n" }.joined())
        }
    }
}

/// Parses a request head (request line and header fields, without the final blank line).
enum HTTPRequestParser {
    struct Problem: Error {
        var status: Int
        var message: String
    }

    /// The index just past the blank line ending the head (CRLF CRLF, or LF LF from lax clients).
    static func headEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        let lf = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r")
        var i = max(start, 0)
        while i < bytes.count {
            if bytes[i] == lf {
                if i + 1 < bytes.count, bytes[i + 1] == lf { return i + 2 }
                if i + 2 < bytes.count, bytes[i + 1] == cr, bytes[i + 2] == lf { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    static func parse(_ head: [UInt8]) -> Result<HTTPRequest, Problem> {
        let bad = { (message: String) in Result<HTTPRequest, Problem>.failure(Problem(status: 400, message: message)) }
        // A head is ASCII text; anything else (TLS hello, binary junk) is not HTTP/1.
        for byte in head where byte >= 0x80 || (byte < 0x20 && byte != UInt8(ascii: "\r") && byte != UInt8(ascii: "\n") && byte != UInt8(ascii: "\t")) {
            return bad("request head is not HTTP/1 text")
        }
        var lines = String(decoding: head, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { return bad("empty request") }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return bad("request line must be METHOD TARGET HTTP/1.1") }
        let method = String(parts[0]), target = String(parts[1]), version = parts[2]
        guard !method.isEmpty, method.utf8.allSatisfy(isTokenByte) else { return bad("bad method") }
        guard target.hasPrefix("/"), !target.contains("\t") else { return bad("request target must start with /") }
        guard version.hasPrefix("HTTP/") else { return bad("bad HTTP version") }
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            return .failure(Problem(status: 505, message: "only HTTP/1.0 and HTTP/1.1 are served"))
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return bad("header line without a colon") }
            let name = line[..<colon]
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else { return bad("bad header name") }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name.lowercased()] = value
        }
        let path: String, query: String?
        if let mark = target.firstIndex(of: "?") {
            path = String(target[..<mark])
            query = String(target[target.index(after: mark)...])
        } else {
            path = target
            query = nil
        }
        return .success(HTTPRequest(method: method, target: target, path: path, query: query, headers: headers))
    }

    /// RFC 9110 token characters.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }
}
