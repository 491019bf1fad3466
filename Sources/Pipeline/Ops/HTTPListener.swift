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
/// It answers GET and HEAD with `Connection: close` (one request per connection) unless the
/// configuration keeps connections (`keepAliveIdle`, the gateway's choice), and it is bounded so
/// that slow or hostile clients cannot stall the worker that embeds it, nor the listener itself:
/// - one I/O thread multiplexes every connection with `poll(2)` on non-blocking sockets, so a
///   client that sends half a request holds a connection slot, never a thread; nothing runs on
///   the Swift concurrency pool;
/// - each request head must arrive whole within `requestTimeout` (a total deadline, not a
///   per-read one, so a client dripping a byte a second is cut off too: 408) and within
///   `maxRequestBytes` (431); each response must be written within the same time;
/// - at most `maxConnections` connections are open at once; a further one gets a 503 and is
///   closed at once. Memory is bounded by `maxConnections × maxRequestBytes` plus responses.
/// - a kept connection waits at most `keepAliveIdle` for its next request (then it is closed
///   without an answer), serves at most `maxRequestsPerConnection`, and when the listener is
///   full an idle kept connection is closed to make room for a new one. Requests the listener
///   itself refuses (400, 408, 411, 413, 431, 504) always close the connection.
///
/// Routes are plain closures, registered before or after `start()`; they run on the I/O thread
/// and must return quickly (render from memory, never wait on Kafka). Call `stop()` before
/// dropping the listener: the thread holds it until then.
///
/// Prefix routes (`routePrefix`, used by the gateway) take any method, may carry a request body
/// (`Content-Length` only, at most `maxBodyBytes`, read within the same total deadline as the
/// head: larger bodies get 413 from the head alone) and answer later, from any thread, through
/// an `HTTPResponder`; meanwhile the connection waits without a thread, up to `handlerTimeout`
/// (then 504).
public final class HTTPListener: Sendable {
    /// A route: runs on the I/O thread, must not block.
    public typealias Route = @Sendable (HTTPRequest) -> HTTPResponse

    public struct Configuration: Sendable {
        public var address: HTTPListenerAddress
        /// Time allowed for a whole request head to arrive, and for the response to be written.
        public var requestTimeout: Duration
        /// Largest request head accepted (request line plus header fields); larger ones get 431.
        public var maxRequestBytes: Int
        /// Connections open at once; more get 503.
        public var maxConnections: Int
        /// Largest request body a prefix route accepts (`Content-Length`); larger ones get 413.
        /// Plain routes never read a body.
        public var maxBodyBytes: Int
        /// Time a prefix route's handler has to answer; then the client gets 504.
        public var handlerTimeout: Duration
        /// How long a connection may wait idle for its next request; nil answers every request
        /// with `Connection: close` (the operational routes' default).
        public var keepAliveIdle: Duration?
        /// Requests served on one kept connection before it is closed.
        public var maxRequestsPerConnection: Int = 1000

        public init(address: HTTPListenerAddress = HTTPListenerAddress(host: "0.0.0.0", port: 9090),
                    requestTimeout: Duration = .seconds(2), maxRequestBytes: Int = 8192,
                    maxConnections: Int = 64, maxBodyBytes: Int = 0, handlerTimeout: Duration = .seconds(60),
                    keepAliveIdle: Duration? = nil) {
            self.address = address
            self.requestTimeout = requestTimeout
            self.maxRequestBytes = maxRequestBytes
            self.maxConnections = maxConnections
            self.maxBodyBytes = maxBodyBytes
            self.handlerTimeout = handlerTimeout
            self.keepAliveIdle = keepAliveIdle
        }
    }

    public let configuration: Configuration
    private let routes = Mutex<[String: Route]>([:])
    private let prefixRoutes = Mutex<[(prefix: String, handler: AsyncRoute)]>([])
    private let running = Mutex<Running?>(nil)
    /// Set by `stop()` before it wakes the thread; other wake-ups deliver prefix-route answers.
    private let stopping = Mutex(false)
    /// Answers of prefix routes not yet picked up by the I/O thread, by connection id.
    private let completions = Mutex<[(id: UInt64, response: HTTPResponse)]>([])
    private let connectionIDs = Mutex<UInt64>(0)
    private let errorRenderer = Mutex<ErrorRenderer?>(nil)

    /// A route that answers later: call `responder.respond(_:)` once, from any thread.
    public typealias AsyncRoute = @Sendable (HTTPRequest, HTTPResponder) -> Void
    /// Renders the listener's own errors (408, 411, 413, 431, 504...) for a prefix route's clients.
    public typealias ErrorRenderer = @Sendable (_ status: Int, _ message: String) -> HTTPResponse

    /// Resources of one run, between `start()` and `stop()`.
    private struct Running: Sendable {
        var listenFD: Int32
        var wakeRead: Int32
        var wakeWrite: Int32
        var bound: HTTPListenerAddress
        let done: DispatchGroup
    }

    public init(configuration: Configuration = Configuration()) {
        var configuration = configuration
        configuration.maxRequestBytes = max(configuration.maxRequestBytes, 64)
        configuration.maxConnections = max(configuration.maxConnections, 1)
        self.configuration = configuration
    }

    /// Serves `handler` for GET and HEAD on `path` (exact match, query string ignored).
    public func route(_ path: String, _ handler: @escaping Route) {
        routes.withLock { $0[path] = handler }
    }

    /// Serves `handler` for every method on paths equal to `prefix` or starting with `prefix + "/"`.
    /// Plain routes win on an exact path match; the longest matching prefix wins otherwise.
    public func routePrefix(_ prefix: String, _ handler: @escaping AsyncRoute) {
        prefixRoutes.withLock { routes in
            routes.removeAll { $0.prefix == prefix }
            routes.append((prefix, handler))
            routes.sort { $0.prefix.count > $1.prefix.count }
        }
    }

    /// How the listener words its own errors to prefix-route clients (default: plain text).
    public func renderErrors(_ renderer: @escaping ErrorRenderer) {
        errorRenderer.withLock { $0 = renderer }
    }

    func prefixRoute(for path: String) -> AsyncRoute? {
        prefixRoutes.withLock { routes in
            routes.first { path == $0.prefix || path.hasPrefix($0.prefix + "/") }?.handler
        }
    }

    func errorResponse(_ status: Int, _ message: String, headers: [(name: String, value: String)] = [], forPrefixRoute: Bool) -> HTTPResponse {
        if forPrefixRoute, let render = errorRenderer.withLock({ $0 }) {
            var response = render(status, message)
            response.headers += headers
            return response
        }
        return HTTPResponse(status: status, text: message + "\n", headers: headers)
    }

    /// Called by a responder: queue the answer and wake the I/O thread.
    func complete(_ id: UInt64, _ response: HTTPResponse) {
        guard let wake = running.withLock({ $0?.wakeWrite }) else { return }
        completions.withLock { $0.append((id, response)) }
        var byte: UInt8 = 0
        _ = write(wake, &byte, 1)
    }

    func nextConnectionID() -> UInt64 { connectionIDs.withLock { $0 += 1; return $0 } }

    /// The address actually bound (with the kernel's port when 0 was asked), while running.
    public var boundAddress: HTTPListenerAddress? { running.withLock { $0?.bound } }

    /// The bound port, while running.
    public var port: UInt16? { boundAddress?.port }

    /// Binds, listens and starts the I/O thread. Returns the bound address.
    @discardableResult
    public func start() throws(HTTPListenerError) -> HTTPListenerAddress {
        let address = configuration.address
        if running.withLock({ $0 != nil }) {
            throw HTTPListenerError(.alreadyRunning, address: address.description, detail: "already running")
        }
        let (listenFD, bound) = try Self.bind(address)
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            let code = errno
            close(listenFD)
            throw HTTPListenerError(.system, address: address.description, errno: code, detail: "pipe: \(Self.describe(code))")
        }
        for fd in pipeFDs + [listenFD] {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        let run = Running(listenFD: listenFD, wakeRead: pipeFDs[0], wakeWrite: pipeFDs[1], bound: bound, done: DispatchGroup())
        stopping.withLock { $0 = false }
        completions.withLock { $0.removeAll() }
        let raced = running.withLock { current -> Bool in
            guard current == nil else { return true }
            current = run
            return false
        }
        if raced {
            for fd in [listenFD, pipeFDs[0], pipeFDs[1]] { close(fd) }
            throw HTTPListenerError(.alreadyRunning, address: address.description, detail: "already running")
        }
        run.done.enter()
        let thread = Thread {
            var loop = EventLoop(listener: self, run: run)
            loop.loop()
            run.done.leave()
        }
        thread.name = "levee-http"
        thread.start()
        return bound
    }

    /// Wakes the I/O thread, waits for it to close every connection and the listening socket.
    /// Safe to call twice; `start()` may be called again afterwards.
    public func stop() {
        guard let run = running.withLock({ $0 }) else { return }
        stopping.withLock { $0 = true }
        var byte: UInt8 = 1
        _ = write(run.wakeWrite, &byte, 1)
        run.done.wait()
        running.withLock { current in
            // Only the run we stopped: a concurrent stop() may have cleared it already.
            if current?.listenFD == run.listenFD {
                close(run.listenFD)
                close(run.wakeRead)
                close(run.wakeWrite)
                current = nil
            }
        }
    }

    // MARK: The I/O thread

    /// One connection's progress: reading the head, writing the response, then lingering
    /// (half-closed, discarding input) so closing does not reset the connection under the reply.
    private struct Connection {
        enum Phase {
            case reading
            /// A prefix route's body: `needed` bytes in all, collected in `buffer`.
            case readingBody(request: HTTPRequest, handler: AsyncRoute, needed: Int)
            /// The handler has the request; its answer comes through `completions`.
            case waiting
            case writing(bytes: [UInt8], sent: Int)
            case lingering(discarded: Int)
        }
        let fd: Int32
        let id: UInt64
        var isHead = false
        /// Whether this answer leaves the connection open for another request.
        var keepAlive = false
        /// Requests answered on this connection.
        var served = 0
        /// Bytes received past the current request (the next pipelined request's start).
        var leftover: [UInt8] = []
        /// Waiting for the next request on a kept connection, nothing of it received yet.
        var isIdle: Bool { served > 0 && buffer.isEmpty && { if case .reading = phase { return true } else { return false } }() }
        var phase: Phase = .reading
        var buffer: [UInt8] = []
        var scanned = 0
        var deadline: ContinuousClock.Instant
        var closed = false
    }

    private struct EventLoop {
        let listener: HTTPListener
        let run: Running
        var connections: [Connection] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var acceptPausedUntil: ContinuousClock.Instant?
        var config: Configuration { listener.configuration }

        init(listener: HTTPListener, run: Running) {
            self.listener = listener
            self.run = run
        }

        mutating func loop() {
            var fds: [pollfd] = []
            while true {
                fds.removeAll(keepingCapacity: true)
                let now = ContinuousClock.now
                if let until = acceptPausedUntil, until <= now { acceptPausedUntil = nil }
                // A negative descriptor is skipped by poll(2): how accepting pauses.
                fds.append(pollfd(fd: acceptPausedUntil == nil ? run.listenFD : -1, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: run.wakeRead, events: Int16(POLLIN), revents: 0))
                for c in connections {
                    let events: Int32 = switch c.phase {
                    case .reading, .readingBody, .lingering: POLLIN
                    case .writing: POLLOUT
                    case .waiting: 0
                    }
                    // A waiting connection is not polled (-1): a hang-up would be reported without
                    // end; its answer or its handler timeout moves it on.
                    fds.append(pollfd(fd: events == 0 ? -1 : c.fd, events: Int16(events), revents: 0))
                }
                let nearest = (connections.map(\.deadline) + [acceptPausedUntil].compactMap { $0 }).min()
                let timeout = nearest.map { HTTPListener.milliseconds(now.duration(to: $0)) } ?? -1
                let ready = poll(&fds, nfds_t(fds.count), timeout)
                if ready < 0 && errno != EINTR { break }
                if ready > 0 && fds[1].revents != 0 {
                    var drain = [UInt8](repeating: 0, count: 256)
                    while drain.withUnsafeMutableBytes({ Glibc.read(run.wakeRead, $0.baseAddress, $0.count) }) > 0 {}
                    if listener.stopping.withLock({ $0 }) { break }
                    deliverCompletions()
                }
                if ready > 0 {
                    for i in connections.indices where fds[i + 2].revents != 0 { service(i) }
                }
                expire(at: ContinuousClock.now)
                connections.removeAll { $0.closed }
                if ready > 0 && fds[0].revents != 0 { acceptAll() }
            }
            for c in connections where !c.closed { close(c.fd) }
            connections.removeAll()
        }

        mutating func acceptAll() {
            while true {
                let fd = accept(run.listenFD, nil, nil)
                if fd < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                        // Out of descriptors or memory: the pending connection stays queued and the
                        // socket stays readable, so polling it now would spin. Pause accepting briefly.
                        acceptPausedUntil = ContinuousClock.now + .milliseconds(100)
                    }
                    return  // EAGAIN: drained
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                if connections.count >= config.maxConnections,
                   let idle = connections.indices.filter({ !connections[$0].closed && connections[$0].isIdle })
                       .min(by: { connections[$0].deadline < connections[$1].deadline }) {
                    finish(idle)  // full: a kept connection with nothing to do makes room
                    connections.remove(at: idle)
                }
                guard connections.count < config.maxConnections else {
                    Self.reject(fd)
                    continue
                }
                connections.append(Connection(fd: fd, id: listener.nextConnectionID(), deadline: ContinuousClock.now + config.requestTimeout))
                service(connections.count - 1)  // the request is often there already
            }
        }

        /// Over capacity: one non-blocking attempt at a 503, then close. Never waits on the client.
        static func reject(_ fd: Int32) {
            let bytes = HTTPResponse(status: 503, text: "too many connections\n", headers: [("Retry-After", "1")]).serialized(head: false)
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(fd)
        }

        mutating func service(_ i: Int) {
            switch connections[i].phase {
            case .reading: read(i)
            case .readingBody: readBody(i)
            case .waiting: break
            case .writing: flush(i)
            case .lingering: linger(i)
            }
        }

        mutating func read(_ i: Int) {
            let limit = config.maxRequestBytes
            while true {
                if let end = HTTPRequestParser.headEnd(connections[i].buffer, from: connections[i].scanned) {
                    let head = Array(connections[i].buffer[..<end])
                    let rest = Array(connections[i].buffer[end...])
                    connections[i].buffer = []
                    let parsed = HTTPRequestParser.parse(head)
                    if case .success(let request) = parsed, listener.routes.withLock({ $0[request.path] }) == nil,
                       let handler = listener.prefixRoute(for: request.path) {
                        startPrefixRoute(i, request, handler, bodyStart: rest)
                        return
                    }
                    if case .success(let request) = parsed, keeps(i, request) {
                        connections[i].keepAlive = true
                        connections[i].leftover = rest
                    }
                    let (response, isHead) = listener.answer(head)
                    startWriting(i, response, head: isHead, keepAlive: connections[i].keepAlive)
                    return
                }
                connections[i].scanned = max(0, connections[i].buffer.count - 3)
                if connections[i].buffer.count >= limit {
                    startWriting(i, HTTPResponse(status: 431, text: "request head larger than \(limit) bytes\n"), head: false)
                    return
                }
                let want = min(chunk.count, limit - connections[i].buffer.count)
                let fd = connections[i].fd
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
                if n > 0 {
                    if connections[i].isIdle {
                        // The next request on a kept connection: its head has the same total deadline.
                        connections[i].deadline = ContinuousClock.now + config.requestTimeout
                    }
                    connections[i].buffer.append(contentsOf: chunk[..<n])
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    return  // wait for more
                } else {
                    finish(i)  // closed by the client, or reset
                    return
                }
            }
        }

        /// Whether the answer to `request` may leave the connection open.
        func keeps(_ i: Int, _ request: HTTPRequest) -> Bool {
            config.keepAliveIdle != nil && request.wantsKeepAlive && connections[i].served + 1 < config.maxRequestsPerConnection
                && !listener.stopping.withLock({ $0 })
        }

        /// A prefix route's request: checks the body's framing and size from the head, then reads
        /// the body (if any) or hands the request to the handler at once.
        mutating func startPrefixRoute(_ i: Int, _ request: HTTPRequest, _ handler: @escaping AsyncRoute, bodyStart: [UInt8]) {
            let listener = self.listener
            let fail = { (status: Int, message: String) in
                listener.errorResponse(status, message, forPrefixRoute: true)
            }
            connections[i].isHead = request.method == "HEAD"
            if request.headers["transfer-encoding"] != nil {
                startWriting(i, fail(411, "send the body with a Content-Length (chunked transfer coding is not accepted)"), head: false)
                return
            }
            var needed = 0
            if let text = request.headers["content-length"] {
                guard let n = Int(text), n >= 0 else {
                    startWriting(i, fail(400, "Content-Length is not a number"), head: false)
                    return
                }
                needed = n
            }
            if needed > config.maxBodyBytes {
                startWriting(i, fail(413, "the request body is \(needed) bytes; the limit is \(config.maxBodyBytes)"), head: false)
                return
            }
            connections[i].buffer = Array(bodyStart.prefix(needed))
            if keeps(i, request) {
                connections[i].keepAlive = true
                connections[i].leftover = Array(bodyStart.dropFirst(needed))
            }
            connections[i].phase = .readingBody(request: request, handler: handler, needed: needed)
            if connections[i].buffer.count < needed, request.headers["expect"]?.lowercased() == "100-continue" {
                // Clients such as curl wait up to a second for this before sending a body.
                let interim = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                let fd = connections[i].fd
                _ = interim.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            readBody(i)
        }

        mutating func readBody(_ i: Int) {
            guard case .readingBody(var request, let handler, let needed) = connections[i].phase else { return }
            while connections[i].buffer.count < needed {
                let want = min(chunk.count, needed - connections[i].buffer.count)
                let fd = connections[i].fd
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
                if n > 0 {
                    connections[i].buffer.append(contentsOf: chunk[..<n])
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    return  // wait for more
                } else {
                    finish(i)
                    return
                }
            }
            request.body = connections[i].buffer
            connections[i].buffer = []
            connections[i].phase = .waiting
            connections[i].deadline = ContinuousClock.now + config.handlerTimeout
            handler(request, HTTPResponder(listener: listener, id: connections[i].id))
        }

        /// Moves answered prefix-route connections to writing.
        mutating func deliverCompletions() {
            let done = listener.completions.withLock { list -> [(id: UInt64, response: HTTPResponse)] in
                defer { list.removeAll() }
                return list
            }
            for (id, response) in done {
                guard let i = connections.firstIndex(where: { $0.id == id && !$0.closed }),
                      case .waiting = connections[i].phase else { continue }  // timed out meanwhile
                startWriting(i, response, head: connections[i].isHead, keepAlive: connections[i].keepAlive)
            }
        }

        /// Writes `response`; with `keepAlive` the connection then waits for the next request,
        /// otherwise it closes (every error the listener itself answers closes).
        mutating func startWriting(_ i: Int, _ response: HTTPResponse, head: Bool, keepAlive: Bool = false) {
            connections[i].keepAlive = keepAlive
            if !keepAlive { connections[i].leftover = [] }
            connections[i].phase = .writing(bytes: response.serialized(head: head, keepAlive: keepAlive), sent: 0)
            connections[i].deadline = ContinuousClock.now + config.requestTimeout
            flush(i)
        }

        mutating func flush(_ i: Int) {
            guard case .writing(let bytes, var sent) = connections[i].phase else { return }
            let fd = connections[i].fd
            while sent < bytes.count {
                let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                if n > 0 {
                    sent += n
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    connections[i].phase = .writing(bytes: bytes, sent: sent)
                    return
                } else {
                    finish(i)
                    return
                }
            }
            if connections[i].keepAlive, let idle = config.keepAliveIdle {
                connections[i].served += 1
                connections[i].keepAlive = false
                connections[i].isHead = false
                connections[i].phase = .reading
                connections[i].buffer = connections[i].leftover
                connections[i].leftover = []
                connections[i].scanned = 0
                connections[i].deadline = ContinuousClock.now + (connections[i].buffer.isEmpty ? idle : config.requestTimeout)
                read(i)  // a pipelined request may be here already
                return
            }
            _ = shutdown(fd, Int32(SHUT_WR))
            connections[i].phase = .lingering(discarded: 0)
            connections[i].deadline = min(connections[i].deadline, ContinuousClock.now + .milliseconds(500))
            linger(i)
        }

        mutating func linger(_ i: Int) {
            guard case .lingering(var discarded) = connections[i].phase else { return }
            let fd = connections[i].fd
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    discarded += n
                    if discarded > 65_536 { finish(i); return }
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    connections[i].phase = .lingering(discarded: discarded)
                    return
                } else {
                    finish(i)
                    return
                }
            }
        }

        mutating func expire(at now: ContinuousClock.Instant) {
            for i in connections.indices where !connections[i].closed && connections[i].deadline <= now {
                switch connections[i].phase {
                case .reading where connections[i].isIdle:
                    finish(i)  // a kept connection idle too long: closed without an answer
                case .reading:
                    startWriting(i, HTTPResponse(status: 408, text: "request head not received in time\n"), head: false)
                case .readingBody:
                    startWriting(i, listener.errorResponse(408, "request body not received in time", forPrefixRoute: true), head: false)
                case .waiting:
                    startWriting(i, listener.errorResponse(504, "no answer in time", forPrefixRoute: true), head: connections[i].isHead)
                case .writing, .lingering:
                    finish(i)
                }
            }
        }

        mutating func finish(_ i: Int) {
            guard !connections[i].closed else { return }
            close(connections[i].fd)
            connections[i].closed = true
        }
    }

    /// The response to one complete request head, and whether it was a HEAD request.
    func answer(_ head: [UInt8]) -> (HTTPResponse, Bool) {
        let request: HTTPRequest
        switch HTTPRequestParser.parse(head) {
        case .failure(let problem): return (HTTPResponse(status: problem.status, text: problem.message + "\n"), false)
        case .success(let parsed): request = parsed
        }
        let isHead = request.method == "HEAD"
        guard let route = routes.withLock({ $0[request.path] }) else {
            return (HTTPResponse(status: 404, text: "no route \(request.path)\n"), isHead)
        }
        guard request.method == "GET" || isHead else {
            return (HTTPResponse(status: 405, text: "method \(request.method) not allowed\n", headers: [("Allow", "GET, HEAD")]), false)
        }
        return (route(request), isHead)
    }

    /// A poll(2) timeout: rounded up, so a deadline is never polled a millisecond early in a loop.
    static func milliseconds(_ d: Duration) -> Int32 {
        if d <= .zero { return 0 }
        let (seconds, attoseconds) = d.components
        return Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
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
        // Split on line feeds: in Swift "\r\n" is one Character, so splitting by "\n" would miss it.
        var lines = String(decoding: head, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
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
        return .success(HTTPRequest(method: method, target: target, path: path, query: query, headers: headers, version: String(version)))
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

/// The way a prefix route answers: once, from any thread. A second answer, or one after the
/// handler timeout or `stop()`, is dropped.
public final class HTTPResponder: Sendable {
    private let listener: HTTPListener
    private let id: UInt64
    private let answered = Mutex(false)

    init(listener: HTTPListener, id: UInt64) {
        self.listener = listener
        self.id = id
    }

    public func respond(_ response: HTTPResponse) {
        let first = answered.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { listener.complete(id, response) }
    }
}
