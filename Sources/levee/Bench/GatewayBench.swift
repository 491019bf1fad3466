import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Kafka
import Pipeline

/// `levee bench gateway`: jobs submitted over HTTP through the gateway vs JobClient.submit in
/// process, at the same steady rate, in one run.
enum GatewayBench {
    static let summary = "Gateway submit rate and p99 over HTTP vs JobClient in process, same rate"
    static let help = """
    Usage: levee bench gateway [--rate R] [--seconds S] [--clients C] [--partitions P]
                               [--brokers LIST] [-X key=value]... [--json]

    Three phases at the same paced rate, each on fresh topics:
      in-process  JobClient.submit R jobs/s for S seconds (as levee bench submit's phase C)
      gateway     POST /v1/jobs R jobs/s for S seconds to a Gateway in this process on
                  127.0.0.1 (the real HTTP listener), from C client threads:
        kept        each thread keeps one connection open (HTTP keep-alive, as clients with a
                    connection pool do: requests, curl sessions, Go, Java)
        new         a new TCP connection per request (Connection: close)
    Latency is per job: in process from the submit call to its return; over HTTP from connect to
    the whole 202 response (Kafka acknowledged the job before the gateway answered). The client
    threads, the gateway and the embedded cluster share this machine's cores.

    Options:
      --rate R          jobs/s (default 2000)
      --seconds S       length of each phase (default 10)
      --clients C       HTTP client threads (default 64)
      --partitions P    partitions per topic (default 16)
      --brokers LIST    use these Kafka brokers instead of the embedded cluster
      -X key=value      librdkafka property (repeatable)
      --json            one JSON object instead of the table

    Goals (issue 13): gateway accepted rate ≥ 0.5× in-process at the same rate, gateway p99 < 20 ms
    at 2,000 jobs/s.
    """

    struct Phase: Codable {
        var name: String
        var jobs: Int
        var accepted: Int
        var failed: Int
        var seconds: Double
        var jobsPerSecond: Double
        var latencyMs: LatencyFigures
        var pacerMaxLagMs: Double
    }

    struct Goal: Codable {
        var goal: String
        var value: Double
        var met: Bool
    }

    struct Report: Codable {
        var cluster: String
        var rate: Double
        var seconds: Double
        var clients: Int
        var partitions: Int
        var phases: [Phase]
        var gatewayToInProcess: Double
        var goals: [Goal]
    }

    static func run(_ arguments: inout Arguments) async throws {
        let rate = try arguments.option("--rate", as: Double.self) ?? 2000
        let seconds = try arguments.option("--seconds", as: Double.self) ?? 10
        let clients = try arguments.option("--clients", as: Int.self) ?? 64
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 16
        let (brokers, properties) = try BenchCluster.parse(&arguments)
        let json = arguments.flag("--json")
        try arguments.finish()
        guard rate.isFinite, rate > 0, rate <= 100_000 else { throw CommandFailure.usage("--rate expects a rate above 0 and at most 100000 jobs/s") }
        guard seconds.isFinite, seconds > 0, seconds <= 600 else { throw CommandFailure.usage("--seconds expects more than 0 and at most 600") }
        guard (1...1024).contains(clients) else { throw CommandFailure.usage("--clients expects 1...1024") }
        guard (1...1000).contains(partitions) else { throw CommandFailure.usage("--partitions expects 1...1000") }
        let count = max(1, Int(rate * seconds))
        let cluster = try BenchCluster.start(brokers: brokers, properties: properties)
        let progress = BenchProgress()
        progress.report("gateway: \(cluster.label); \(count) jobs per phase at \(Int(rate)) jobs/s", force: true)

        var phases: [Phase] = []
        do {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("gateway-inproc"), partitions: partitions)
            let client = try JobClient(connection: connection)
            try await client.prepare()
            let result = try await SubmitBench.paced(client: client, count: count, rate: rate, maxInFlight: 10_000, progress: progress)
            try await client.close()
            phases.append(Phase(name: "in-process JobClient.submit", jobs: count, accepted: result.latencies.count, failed: count - result.latencies.count,
                                seconds: rounded(result.seconds, 3), jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                latencyMs: LatencyFigures(result.latencies), pacerMaxLagMs: rounded(result.maxLagMs, 3)))
        }
        do {
            let connection = try await cluster.connection(prefix: BenchCluster.uniquePrefix("gateway-http"), partitions: partitions)
            var configuration = GatewayConfiguration()
            configuration.defaultModel = "synthetic"
            configuration.maxConnections = max(1024, clients * 2)
            let gateway = try Gateway(connection: connection, configuration: configuration)
            let listener = HTTPListener(configuration: gateway.listenerConfiguration(address: HTTPListenerAddress(host: "127.0.0.1", port: 0)))
            gateway.attach(to: listener)
            let port = try listener.start().port
            defer { listener.stop() }
            phases += try await withThrowingTaskGroup(of: [Phase]?.self) { group in
                group.addTask { try await gateway.run(); return nil }
                while !gateway.readiness.isReady { try await Task.sleep(for: .milliseconds(50)) }
                var out: [Phase] = []
                for keep in [true, false] {
                    let result = await httpPaced(port: port, count: count, rate: rate, clients: clients, keepAlive: keep, progress: progress)
                    out.append(Phase(name: "gateway POST /v1/jobs, " + (keep ? "kept conn." : "new conn."), jobs: count,
                                     accepted: result.latencies.count, failed: result.failed,
                                     seconds: rounded(result.seconds, 3), jobsPerSecond: (Double(result.latencies.count) / result.seconds).rounded(),
                                     latencyMs: LatencyFigures(result.latencies), pacerMaxLagMs: rounded(result.maxLagMs, 3)))
                }
                gateway.shutdown()
                return out
            }
        }
        let ratio = phases[0].jobsPerSecond > 0 ? rounded(phases[1].jobsPerSecond / phases[0].jobsPerSecond) : 0
        let goals = [
            Goal(goal: "gateway (kept connections) accepted rate ≥ 0.5× in-process at the same rate", value: ratio, met: ratio >= 0.5),
            Goal(goal: String(format: "gateway (kept connections) p99 < 20 ms at %.0f jobs/s", rate), value: phases[1].latencyMs.p99,
                 met: phases[1].latencyMs.p99 < 20 && phases[1].failed == 0 && phases[1].jobsPerSecond >= 0.95 * rate),
        ]
        let report = Report(cluster: cluster.label, rate: rate, seconds: seconds, clients: clients, partitions: partitions,
                            phases: phases, gatewayToInProcess: ratio, goals: goals)
        if json {
            try printJSON(report)
        } else {
            var text = "Gateway vs in-process submit at \(Int(rate)) jobs/s for \(seconds) s, \(partitions) partitions, \(cluster.label)\n"
            text += "phase                                  jobs/s   failed   p50     p99   p99.9     max (ms)  pacer lag max\n"
            for p in phases {
                text += p.name.padding(toLength: 36, withPad: " ", startingAt: 0)
                text += String(format: " %8.0f %8d %6.2f %7.2f %7.2f %8.2f %10.1f\n", p.jobsPerSecond, p.failed, p.latencyMs.p50, p.latencyMs.p99,
                               p.latencyMs.p999, p.latencyMs.max, p.pacerMaxLagMs)
            }
            text += String(format: "gateway ÷ in-process: %.2f×\n", ratio)
            for g in goals { text += "goal: \(g.goal): \(g.value) — \(g.met ? "met" : "NOT met")\n" }
            printOut(text)
        }
        withExtendedLifetime(cluster) {}
    }

    final class HTTPState: Sendable {
        let latencies = Mutex<[Double]>([])
        let failed = Mutex(0)
        let lag = Mutex(0.0)
    }

    struct HTTPResult: Sendable {
        var latencies: [Double]
        var failed: Int
        var seconds: Double
        var maxLagMs: Double
    }

    /// `count` POSTs at `rate`/s: client thread k sends requests k, k+C, k+2C, ... each at its
    /// due time (or at once when behind), blocking on its own socket.
    static func httpPaced(port: UInt16, count: Int, rate: Double, clients: Int, keepAlive: Bool, progress: BenchProgress) async -> HTTPResult {
        let state = HTTPState()
        let start = ContinuousClock.now + .milliseconds(50)
        await withTaskGroup(of: Void.self) { group in
            for k in 0..<min(clients, count) {
                group.addTask {
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        Thread.detachNewThread {
                            let kept = KeptConnection(port: port)
                            var mine: [Double] = []
                            var bad = 0
                            var worstLag = 0.0
                            var i = k
                            while i < count {
                                let due = start + .nanoseconds(Int64(Double(i) * 1e9 / rate))
                                let now = ContinuousClock.now
                                if due > now {
                                    let wait = (due - now).milliseconds
                                    usleep(UInt32(wait * 1000))
                                } else {
                                    worstLag = max(worstLag, (now - due).milliseconds)
                                }
                                let body = #"{"messages":[{"role":"user","content":"question \#(i)"}],"params":{"max_tokens":16}}"#
                                let t = ContinuousClock.now
                                if (keepAlive ? kept.post(body: body) : post(port: port, body: body)) == 202 { mine.append((ContinuousClock.now - t).milliseconds) } else { bad += 1 }
                                i += clients
                            }
                            kept.close()
                            state.latencies.withLock { $0 += mine }
                            state.failed.withLock { $0 += bad }
                            state.lag.withLock { $0 = max($0, worstLag) }
                            done.resume()
                        }
                    }
                }
            }
            group.addTask {
                while state.latencies.withLock({ $0.count }) + state.failed.withLock({ $0 }) < count && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    progress.report("gateway: HTTP phase: threads still running")
                }
            }
            await group.waitForAll()
        }
        return HTTPResult(latencies: state.latencies.withLock { $0 }, failed: state.failed.withLock { $0 },
                          seconds: (ContinuousClock.now - start).benchSeconds, maxLagMs: state.lag.withLock { $0 })
    }

    /// One blocking HTTP/1.1 POST on a new connection; the status code, or 0 on a socket failure.
    static func post(port: UInt16, body: String) -> Int {
        guard let fd = connect(port: port) else { return 0 }
        defer { close(fd) }
        let request = Array("POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return 0 }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += chunk[..<n]
        }
        let words = String(decoding: response.prefix(32), as: UTF8.self).split(separator: " ")
        return words.count >= 2 ? Int(words[1]) ?? 0 : 0
    }

    /// A blocking TCP connection to 127.0.0.1:`port` (TCP_NODELAY, 30 s receive timeout).
    static func connect(port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// One client's kept connection: POSTs one after another on it, reading each answer by its
    /// Content-Length; reconnects when the server closed it (idle timeout, request limit).
    final class KeptConnection {
        let port: UInt16
        var fd: Int32?
        var buffer: [UInt8] = []

        init(port: UInt16) { self.port = port }

        func close() {
            if let fd { Glibc.close(fd) }
            fd = nil
            buffer = []
        }

        /// The status code, or 0 on a socket failure.
        func post(body: String) -> Int {
            for attempt in 0..<2 {
                if fd == nil { fd = GatewayBench.connect(port: port) }
                guard let fd else { return 0 }
                let request = Array("POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
                let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count
                if sent, let (status, closes) = readResponse(fd) {
                    if closes { close() }
                    return status
                }
                close()  // closed under us (e.g. idle timeout between two requests): once more on a new one
                if attempt == 1 { return 0 }
            }
            return 0
        }

        /// Reads one response: (status, whether the server closes the connection after it).
        func readResponse(_ fd: Int32) -> (Int, Bool)? {
            var chunk = [UInt8](repeating: 0, count: 4096)
            var headEnd: Int?
            while true {
                if headEnd == nil, let end = Self.find(buffer, [13, 10, 13, 10]) { headEnd = end + 4 }
                if let headEnd {
                    let head = String(decoding: buffer[..<headEnd], as: UTF8.self).lowercased()
                    var length = 0
                    for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                        length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                    if buffer.count >= headEnd + length {
                        let words = head.prefix(32).split(separator: " ")
                        let status = words.count >= 2 ? Int(words[1]) ?? 0 : 0
                        buffer.removeFirst(headEnd + length)
                        return (status, head.contains("connection: close"))
                    }
                }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return nil }
                buffer += chunk[..<n]
            }
        }

        static func find(_ bytes: [UInt8], _ needle: [UInt8]) -> Int? {
            guard bytes.count >= needle.count else { return nil }
            for i in 0...(bytes.count - needle.count) where bytes[i] == needle[0] && Array(bytes[i..<(i + needle.count)]) == needle { return i }
            return nil
        }
    }
}
