import Foundation
import Kafka
import Synchronization

/// How `levee gateway` serves HTTP and talks to Kafka.
public struct GatewayConfiguration: Sendable {
    /// Largest `POST /v1/jobs` body; larger ones get 413 from the head alone.
    public var maxBodyBytes: Int = 256 * 1024
    /// Head and body must arrive within this (total, so a dripping client is cut off: 408).
    public var requestTimeout: Duration = .seconds(5)
    /// Connections open at once (long polls hold one each); more get 503.
    public var maxConnections: Int = 512
    /// How long a client's connection stays open for its next request (HTTP keep-alive); an idle
    /// one is closed first when the gateway is full.
    public var keepAliveIdle: Duration = .seconds(10)
    /// Requests being handled at once; more get 503 with Retry-After.
    public var maxInFlight: Int = 1024
    /// A submit not acknowledged by Kafka within this fails with 503 (the producer's
    /// `message.timeout.ms`, so librdkafka gives the record up too: nothing is written later).
    public var submitTimeout: Duration = .seconds(10)
    /// The longest `?wait=S` honoured.
    public var maxWait: Duration = .seconds(60)
    /// Bearer tokens accepted on /v1 (empty: no authentication). Never logged.
    public var tokens: [String] = []
    public var defaultTenant = "default"
    public var defaultModel = "smollm2-135m-instruct"
    /// Hosts a job's `callback_url` may name (see `CallbackAllowList`); empty refuses callbacks.
    public var callbackHosts = CallbackAllowList()
    public var limits = JobLimits()
    /// Extra librdkafka properties for the gateway's producer.
    public var producerProperties: [String: String] = [:]

    public init() {}
}

/// The HTTP gateway: business applications in any language submit, poll, cancel and trace jobs
/// with plain HTTP and JSON (schemas/openapi.yaml), and keep what Kafka gives: a 202 means the
/// job is durable (acks=all), an `Idempotency-Key` gives the same job id as
/// `levee submit --idempotency-key`, and every job ends with exactly one result.
///
/// Requests arrive on the listener's I/O thread, which only checks what needs no Kafka (route,
/// method, token, the in-flight bound) and queues the rest; `run()` handles them concurrently.
public final class Gateway: Sendable {
    public let connection: KafkaConnection
    public let configuration: GatewayConfiguration
    public let metrics: GatewayMetrics
    private let client: JobClient
    private let requests: AsyncStream<(HTTPRequest, HTTPResponder)>
    private let queue: AsyncStream<(HTTPRequest, HTTPResponder)>.Continuation
    private let inFlight = Mutex(0)
    private let state = Mutex<(ready: Bool, reason: String)>((false, "connecting to Kafka"))

    public init(connection: KafkaConnection, configuration: GatewayConfiguration = GatewayConfiguration(),
                metrics: MetricsRegistry = MetricsRegistry()) throws {
        self.connection = connection
        self.configuration = configuration
        self.metrics = GatewayMetrics(metrics)
        var props = configuration.producerProperties
        props["message.timeout.ms"] = props["message.timeout.ms"] ?? String(max(1, Int64(configuration.submitTimeout.milliseconds)))
        client = try JobClient(connection: connection, limits: configuration.limits, properties: props,
                               maxInFlight: max(configuration.maxInFlight * 2, 64))
        let stream = AsyncStream.makeStream(of: (HTTPRequest, HTTPResponder).self, bufferingPolicy: .unbounded)
        requests = stream.stream
        queue = stream.continuation
    }

    /// Whether the gateway can take jobs (Kafka reached, jobs topic there), for `/readyz`.
    public var readiness: Readiness {
        let s = state.withLock { $0 }
        return s.ready ? .ready : Readiness(reasons: [s.reason])
    }

    /// The listener configuration the gateway needs (bodies, long polls).
    public func listenerConfiguration(address: HTTPListenerAddress) -> HTTPListener.Configuration {
        HTTPListener.Configuration(address: address, requestTimeout: configuration.requestTimeout, maxRequestBytes: 16 * 1024,
                                   maxConnections: configuration.maxConnections, maxBodyBytes: configuration.maxBodyBytes,
                                   handlerTimeout: configuration.maxWait + configuration.submitTimeout + .seconds(30),
                                   keepAliveIdle: configuration.keepAliveIdle)
    }

    /// Serves `/v1/...` on `listener`, with `/metrics`, `/healthz` and `/readyz`.
    public func attach(to listener: HTTPListener) {
        listener.serveOperations(metrics: metrics.registry) { [self] in readiness }
        listener.renderErrors { status, message in Problem(status: status, detail: message).response() }
        listener.routePrefix("/v1") { [self] request, responder in accept(request, responder) }
    }

    /// Handles queued requests until `shutdown()`, then lets the running ones finish.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.connect() }
            for await (request, responder) in requests {
                group.addTask { await self.handle(request, responder) }
            }
            group.cancelAll()
        }
        try? await client.close()
    }

    /// Stops taking requests (they get 503); `run()` returns once the running ones are answered.
    public func shutdown() {
        state.withLock { $0 = (false, "shutting down") }
        queue.finish()
    }

    /// Reads the cluster's metadata until it works: readiness follows.
    private func connect() async {
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled {
            do {
                try await client.prepare(timeout: .seconds(5))
                state.withLock { if $0.reason != "shutting down" { $0 = (true, "") } }
                return
            } catch {
                state.withLock { if $0.reason != "shutting down" { $0 = (false, "Kafka not usable: \(error)") } }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    // MARK: On the I/O thread: quick checks only

    private func accept(_ request: HTTPRequest, _ responder: HTTPResponder) {
        if !configuration.tokens.isEmpty && !Self.authorized(request.headers["authorization"], tokens: configuration.tokens) {
            metrics.requests.labels("auth", "401").increment()
            responder.respond(Problem(status: 401, detail: "send Authorization: Bearer <token> (one of LEVEE_GATEWAY_TOKENS)")
                .response(headers: [("WWW-Authenticate", "Bearer realm=\"levee\"")]))
            return
        }
        guard let route = GatewayRoute(request) else {
            metrics.requests.labels("unknown", "404").increment()
            responder.respond(Problem(status: 404, detail: "no such resource: \(request.method) \(request.path) (see schemas/openapi.yaml)").response())
            return
        }
        if case .methodNotAllowed(let allowed) = route {
            metrics.requests.labels("unknown", "405").increment()
            responder.respond(Problem(status: 405, detail: "\(request.method) is not served on \(request.path)")
                .response(headers: [("Allow", allowed)]))
            return
        }
        guard readiness.isReady else {
            metrics.requests.labels(route.name, "503").increment()
            responder.respond(Problem(status: 503, detail: "not ready: \(readiness.reasons.joined(separator: "; "))")
                .response(headers: [("Retry-After", "1")]))
            return
        }
        let admitted = inFlight.withLock { n -> Bool in
            guard n < configuration.maxInFlight else { return false }
            n += 1
            return true
        }
        guard admitted else {
            metrics.requests.labels(route.name, "503").increment()
            responder.respond(Problem(status: 503, detail: "the gateway has \(configuration.maxInFlight) requests in flight; retry shortly")
                .response(headers: [("Retry-After", "1")]))
            return
        }
        metrics.inFlight.increment()
        if case .terminated = queue.yield((request, responder)) {
            inFlight.withLock { $0 -= 1 }
            metrics.inFlight.decrement()
            responder.respond(Problem(status: 503, detail: "the gateway is shutting down").response(headers: [("Retry-After", "1")]))
        }
    }

    /// Compares every token in full, so the time taken does not tell how much of one matched.
    static func authorized(_ header: String?, tokens: [String]) -> Bool {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let given = Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
        var match = false
        for token in tokens {
            let expected = Array(token.utf8)
            var difference = UInt8(given.count == expected.count ? 0 : 1)
            for i in 0..<expected.count { difference |= expected[i] ^ (i < given.count ? given[i] : 0) }
            if difference == 0 { match = true }
        }
        return match
    }

    // MARK: Handling, off the I/O thread

    private func handle(_ request: HTTPRequest, _ responder: HTTPResponder) async {
        let started = ContinuousClock.now
        let route = GatewayRoute(request)!
        let response: HTTPResponse
        switch route {
        case .submit: response = await submit(request)
        case .status(let id): response = await status(id, request)
        case .trace(let id): response = await trace(id)
        case .cancel(let id): response = await cancel(id)
        case .badID(let text): response = Problem(status: 404, detail: "'\(text.prefix(64))' is not a job id (a UUID)").response()
        case .methodNotAllowed: response = Problem(status: 405, detail: "method not allowed").response()
        }
        responder.respond(response)
        inFlight.withLock { $0 -= 1 }
        metrics.inFlight.decrement()
        metrics.requests.labels(route.name, String(response.status)).increment()
        metrics.duration.labels(route.name).observe((ContinuousClock.now - started).milliseconds / 1000)
    }

    private func submit(_ request: HTTPRequest) async -> HTTPResponse {
        if let type = request.headers["content-type"]?.lowercased(), !(type.hasPrefix("application/json") || type.contains("+json")) {
            return Problem(status: 415, detail: "send the job as Content-Type: application/json (got \(type.prefix(80)))").response()
        }
        let job: JobEnvelope
        do {
            let body = try JobRequest.parse(request.body).get()
            job = try body.job(defaultTenant: configuration.defaultTenant, defaultModel: configuration.defaultModel,
                               headerIdempotencyKey: request.headers["idempotency-key"], limits: configuration.limits)
            if let url = job.callbackURL, let why = configuration.callbackHosts.refusal(url) {
                throw JobValidationError(["callback_url: \(why)"])
            }
        } catch let error as JobValidationError {
            return Problem(status: 400, detail: error.problems.count == 1 ? error.problems[0] : "\(error.problems.count) problems in the job",
                           errors: error.problems).response()
        } catch {
            return Problem(status: 400, detail: "\(error)").response()
        }
        do {
            let receipt = try await client.submit(job)
            metrics.submitted.increment()
            let location = "/v1/jobs/\(receipt.jobID)"
            let body = SubmitAnswer(receipt: receipt, location: location)
            return HTTPResponse(status: 202, contentType: "application/json", body: Array((try? LeveeJSON.encode(body)) ?? Data()),
                                headers: [("Location", location)])
        } catch let error as JobValidationError {
            return Problem(status: 400, detail: error.problems.joined(separator: "; "), errors: error.problems).response()
        } catch {
            // Not acknowledged in time (or refused): librdkafka gave the record up, so nothing
            // was written; resubmitting with the same Idempotency-Key is safe either way.
            metrics.submitFailures.increment()
            return Problem(status: 503, detail: "Kafka did not accept the job: \(error); retry (with the same Idempotency-Key)")
                .response(headers: [("Retry-After", "2")])
        }
    }

    private func status(_ id: JobID, _ request: HTTPRequest) async -> HTTPResponse {
        var wait = Duration.zero
        if let text = Self.queryValue(request.query, "wait") {
            guard let seconds = Double(text), seconds >= 0, seconds.isFinite else {
                return Problem(status: 400, detail: "wait expects seconds ≥ 0, got '\(text.prefix(40))'").response()
            }
            wait = min(.milliseconds(Int64(seconds * 1000)), configuration.maxWait)
        }
        do {
            if let result = try await ResultLookup.result(connection, jobID: id, wait: wait) {
                return Self.json(200, JobStatusView(jobID: id, state: result.status.rawValue, result: result, diagnosis: nil))
            }
            guard let trace = try await TraceReader.trace(connection, jobID: id) else {
                return Problem(status: 404, detail: "unknown job id \(id)").response()
            }
            if let result = trace.result {
                return Self.json(200, JobStatusView(jobID: id, state: result.status.rawValue, result: result, diagnosis: trace.diagnosis))
            }
            return Self.json(200, JobStatusView(jobID: id, state: Self.pendingState(trace.events), result: nil, diagnosis: trace.diagnosis))
        } catch {
            return Problem(status: 503, detail: "cannot read the job's state from Kafka: \(error)").response(headers: [("Retry-After", "2")])
        }
    }

    /// `running` once a worker received the job (and it was not handed back or rescheduled since), else `queued`.
    static func pendingState(_ events: [TraceEvent]) -> String {
        for event in events.reversed() {
            switch event.stage {
            case .received, .inferenceStarted, .inferenceFinished: return "running"
            case .submitted, .accepted, .requeued, .retryScheduled, .handedBack: return "queued"
            default: continue
            }
        }
        return "queued"
    }

    private func trace(_ id: JobID) async -> HTTPResponse {
        do {
            guard let trace = try await TraceReader.trace(connection, jobID: id) else {
                return Problem(status: 404, detail: "unknown job id \(id)").response()
            }
            return Self.json(200, trace)
        } catch {
            return Problem(status: 503, detail: "cannot read the trace from Kafka: \(error)").response(headers: [("Retry-After", "2")])
        }
    }

    private func cancel(_ id: JobID) async -> HTTPResponse {
        do {
            if let result = try await ResultLookup.result(connection, jobID: id) {
                var problem = Problem(status: 409, detail: "job \(id) already ended \(result.status.rawValue); it keeps its result")
                problem.type = "https://levee.dev/problems/already-terminal"
                return problem.response()
            }
            try await client.cancel(id, reason: "cancelled through the HTTP gateway")
            return Self.json(202, ["job_id": id.description, "cancel": "requested"])
        } catch {
            return Problem(status: 503, detail: "cannot reach Kafka: \(error)").response(headers: [("Retry-After", "2")])
        }
    }

    static func json<T: Encodable>(_ status: Int, _ value: T) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: Array((try? LeveeJSON.encode(value)) ?? Data("{}".utf8)))
    }

    static func queryValue(_ query: String?, _ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.first == Substring(name) { return parts.count > 1 ? String(parts[1]).removingPercentEncoding ?? String(parts[1]) : "" }
        }
        return nil
    }
}

/// `202 Accepted` for `POST /v1/jobs`: where the job was written, once Kafka acknowledged it.
struct SubmitAnswer: Encodable {
    var receipt: SubmitReceipt
    var location: String
    enum CodingKeys: String, CodingKey { case jobID = "job_id", state, topic, partition, offset, submittedAt = "submitted_at", location }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(receipt.jobID, forKey: .jobID)
        try c.encode("queued", forKey: .state)
        try c.encode(receipt.topic, forKey: .topic)
        try c.encode(receipt.partition, forKey: .partition)
        try c.encode(receipt.offset, forKey: .offset)
        try c.encode(receipt.submittedAt, forKey: .submittedAt)
        try c.encode(location, forKey: .location)
    }
}

/// `GET /v1/jobs/{id}`: the state, and the result once terminal.
public struct JobStatusView: Codable, Sendable {
    public var jobID: JobID
    /// queued, running, succeeded, failed, expired or cancelled.
    public var state: String
    public var result: ResultRecord?
    public var diagnosis: String?
    enum CodingKeys: String, CodingKey { case jobID = "job_id", state, result, diagnosis }
}

/// The routes under /v1.
enum GatewayRoute {
    case submit
    case status(JobID)
    case trace(JobID)
    case cancel(JobID)
    case badID(String)
    case methodNotAllowed(String)

    init?(_ request: HTTPRequest) {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()  // "", "v1", ...
        guard parts.count >= 2, parts[parts.startIndex] == "v1", parts[parts.startIndex + 1] == "jobs" else { return nil }
        let rest = Array(parts.dropFirst(2))
        let method = request.method
        switch rest.count {
        case 0:
            self = method == "POST" ? .submit : .methodNotAllowed("POST")
        case 1, 2:
            if rest.count == 2 && rest[1] != "trace" { return nil }
            let text = String(rest[0])
            guard let id = JobID(string: text) else { self = .badID(text); return }
            if rest.count == 2 {
                self = method == "GET" || method == "HEAD" ? .trace(id) : .methodNotAllowed("GET, HEAD")
            } else if method == "GET" || method == "HEAD" {
                self = .status(id)
            } else if method == "DELETE" {
                self = .cancel(id)
            } else {
                self = .methodNotAllowed("GET, HEAD, DELETE")
            }
        default:
            return nil
        }
    }

    var name: String {
        switch self {
        case .submit: "submit"
        case .status: "status"
        case .trace: "trace"
        case .cancel: "cancel"
        case .badID, .methodNotAllowed: "invalid"
        }
    }
}

/// The gateway's Prometheus series.
public struct GatewayMetrics: Sendable {
    public let registry: MetricsRegistry
    let requests: Counter
    let duration: Histogram
    let inFlight: Gauge
    let submitted: Counter
    let submitFailures: Counter

    init(_ r: MetricsRegistry) {
        registry = r
        requests = r.counter("levee_gateway_requests_total", help: "HTTP requests on /v1, by route and status code.", labelNames: ["route", "code"])
        duration = r.histogram("levee_gateway_request_duration_seconds", help: "Time to answer a /v1 request (long polls included), by route.",
                               labelNames: ["route"], buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60])
        inFlight = r.gauge("levee_gateway_requests_in_flight", help: "Requests being handled now.")
        submitted = r.counter("levee_gateway_jobs_submitted_total", help: "Jobs acknowledged by Kafka and answered 202.")
        submitFailures = r.counter("levee_gateway_submit_failures_total", help: "Submits Kafka did not acknowledge in time (answered 503).")
    }
}
