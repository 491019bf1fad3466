import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kafka
import Synchronization

/// How the callback dispatcher delivers.
public struct CallbackDispatcherConfiguration: Sendable {
    /// Hosts a callback may go to; a job naming another host gets `callback_abandoned`, no request.
    public var hosts = CallbackAllowList()
    /// The HMAC-SHA-256 key of the `Levee-Signature` header (LEVEE_CALLBACK_SECRET).
    public var secret: [UInt8] = []
    public var maxAttempts = 8
    /// First retry delay; doubles per attempt up to `maxDelay`.
    public var baseDelay: Duration = .seconds(1)
    public var maxDelay: Duration = .seconds(300)
    /// One POST's limit (connect, send, answer).
    public var attemptTimeout: Duration = .seconds(10)
    /// How often the topics are read for new results and jobs.
    public var pollInterval: Duration = .milliseconds(500)
    /// Deliveries in progress at once (each retries on its own; a slow receiver holds one slot).
    public var maxConcurrent = 64
    /// Who writes the callback trace events.
    public var dispatcherID = "callbacks-" + ProcessInfo.processInfo.hostName

    public init() {}
}

/// Delivers completion callbacks: for every job whose record carries a `callback_url`, POSTs
/// its terminal result there once it exists, signed, retried with backoff.
///
/// Guarantee: **at least once** per job, with the job id as the delivery id
/// (`Levee-Delivery-Id`) so receivers can drop repeats. Every attempt is a trace event
/// (`callback_failed`, then `callback_delivered` or `callback_abandoned`), written and acknowledged
/// before the delivery counts as done; those events are the durable memory: at start the
/// dispatcher reads the jobs, results and trace topics from the beginning (like the reconciler)
/// and skips jobs already delivered or abandoned. A repeat happens only if the dispatcher dies
/// between the receiver's 2xx and the acknowledgement of `callback_delivered`. Results are never
/// written (the results topic keeps its one record per job). Run one dispatcher per cluster:
/// two would both deliver.
///
/// A request is `POST callback_url` with the body of `GET /v1/jobs/{id}` (job_id, state,
/// result) and the headers `Levee-Delivery-Id`, `Levee-Delivery-Attempt` and
/// `Levee-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. 2xx is
/// success; anything else, a redirect (never followed) or a timeout is a failed attempt.
public final class CallbackDispatcher: Sendable {
    public let connection: KafkaConnection
    public let configuration: CallbackDispatcherConfiguration
    private let producer: KafkaProducer
    private let metrics: CallbackMetrics
    private let state = Mutex(DispatchState())
    private let stopped = Mutex(false)
    private let identity: WorkerIdentity

    struct Registration: Sendable {
        var url: String
        var attempt: Int
    }

    /// What the topics said so far, and which deliveries are running.
    struct DispatchState {
        var registrations: [JobID: Registration] = [:]
        var results: [JobID: ResultRecord] = [:]
        var done: Set<JobID> = []
        var running: Set<JobID> = []
        /// Ids of results read for jobs not (yet) registered, this pass and the previous one: a
        /// job record read a pass after its result still finds it.
        var unmatched: Set<JobID> = []
        var unmatchedBefore: Set<JobID> = []
    }

    public init(connection: KafkaConnection, configuration: CallbackDispatcherConfiguration, metrics: MetricsRegistry = MetricsRegistry()) throws {
        self.connection = connection
        self.configuration = configuration
        self.metrics = CallbackMetrics(metrics)
        producer = try KafkaProducer(configuration: connection.configuration(["linger.ms": "5"]))
        identity = WorkerIdentity(id: configuration.dispatcherID, host: ProcessInfo.processInfo.hostName,
                                  pid: ProcessInfo.processInfo.processIdentifier)
    }

    /// Reads and delivers until `shutdown()`; deliveries still retrying then stop (they resume
    /// after a restart, since they are not done).
    public func run() async throws {
        let layout = connection.layout
        let drain = TopicDrain(connection: connection, topics: [layout.jobs, layout.results, layout.trace],
                               extra: ["isolation.level": "read_committed"])
        await withDiscardingTaskGroup { group in
            var failures = 0
            while !stopped.withLock({ $0 }) {
                do {
                    try await drain.read(timeout: .seconds(60)) { message in self.apply(message) }
                    failures = 0
                    for delivery in nextDeliveries() {
                        group.addTask { await self.deliver(delivery.0, delivery.1, result: delivery.2) }
                    }
                } catch {
                    failures += 1
                    if failures == 1 || failures % 20 == 0 {
                        FileHandle.standardError.write(Data("levee callbacks: reading the topics failed: \(error); retrying\n".utf8))
                    }
                }
                try? await Task.sleep(for: configuration.pollInterval)
            }
            group.cancelAll()
        }
        try? await producer.close()
    }

    public func shutdown() { stopped.withLock { $0 = true } }

    func apply(_ message: KafkaMessage) {
        guard let value = message.value, let id = message.keyString.flatMap(JobID.init(string:)) else { return }
        let layout = connection.layout
        state.withLock { s in
            switch message.topic {
            case layout.trace:
                guard value.count < 65_536, Self.contains(value, "\"callback_") else { return }
                guard let event = try? LeveeJSON.decode(TraceEvent.self, from: Data(value)),
                      event.stage == .callbackDelivered || event.stage == .callbackAbandoned else { return }
                s.done.insert(id)
                s.registrations[id] = nil
                s.results[id] = nil
            case layout.jobs:
                guard !s.done.contains(id), s.registrations[id] == nil, Self.contains(value, "\"callback_url\""),
                      let job = try? LeveeJSON.decode(JobEnvelope.self, from: Data(value)), let url = job.callbackURL else { return }
                s.registrations[id] = Registration(url: url, attempt: job.attempt)
            case layout.results:
                guard !s.done.contains(id) else { return }
                if s.registrations[id] != nil {
                    if s.results[id] == nil, let record = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) { s.results[id] = record }
                } else {
                    s.unmatched.insert(id)
                }
            default:
                break
            }
        }
    }

    /// Registered jobs with a result, not done and not running; marks them running.
    func nextDeliveries() -> [(JobID, Registration, ResultRecord?)] {
        let (deliveries, pending) = state.withLock { s -> ([(JobID, Registration, ResultRecord?)], Int) in
            var out: [(JobID, Registration, ResultRecord?)] = []
            for (id, registration) in s.registrations where !s.done.contains(id) && !s.running.contains(id) {
                guard s.running.count < configuration.maxConcurrent else { break }
                if let result = s.results[id] {
                    out.append((id, registration, result))
                } else if s.unmatched.contains(id) || s.unmatchedBefore.contains(id) {
                    out.append((id, registration, nil))  // its result was read before its job: look it up
                } else {
                    continue
                }
                s.running.insert(id)
            }
            s.unmatchedBefore = s.unmatched
            s.unmatched = []
            return (out, s.registrations.count)
        }
        metrics.pending.set(Double(pending))
        return deliveries
    }

    private func finish(_ id: JobID) {
        state.withLock { s in
            s.running.remove(id)
            s.done.insert(id)
            s.registrations[id] = nil
            s.results[id] = nil
        }
    }

    func deliver(_ id: JobID, _ registration: Registration, result known: ResultRecord?) async {
        var result = known
        while result == nil && !Task.isCancelled {
            result = try? await ResultLookup.result(connection, jobID: id)
            if result == nil { try? await Task.sleep(for: .seconds(1)) }
        }
        guard let result else {
            state.withLock { _ = $0.running.remove(id) }
            return
        }
        let attemptOfJob = max(result.attempt, 1)
        if let refusal = configuration.hosts.refusal(registration.url) {
            metrics.abandoned.increment()
            await record(TraceEvent(jobID: id, stage: .callbackAbandoned, attempt: attemptOfJob, worker: identity, status: result.status,
                                    detail: "not sent: \(refusal)"))
            finish(id)
            return
        }
        let body = Array((try? LeveeJSON.encode(JobStatusView(jobID: id, state: result.status.rawValue, result: result, diagnosis: nil))) ?? Data())
        var lastProblem = ""
        for attempt in 1...max(configuration.maxAttempts, 1) {
            let started = ContinuousClock.now
            let outcome = await post(registration.url, body: body, id: id, attempt: attempt)
            let ms = Int64((ContinuousClock.now - started).milliseconds)
            switch outcome {
            case .success(let status):
                metrics.delivered.increment()
                await record(TraceEvent(jobID: id, stage: .callbackDelivered, attempt: attemptOfJob, worker: identity, durationMs: ms,
                                        status: result.status, detail: "attempt \(attempt): HTTP \(status) from \(Self.hostOf(registration.url))"))
                finish(id)
                return
            case .failure(let problem):
                lastProblem = problem.description
                metrics.failedAttempts.increment()
                let delay: Duration? = attempt < configuration.maxAttempts ? backoff(attempt) : nil
                await record(TraceEvent(jobID: id, stage: .callbackFailed, attempt: attemptOfJob, worker: identity, durationMs: ms,
                                        status: result.status,
                                        detail: "attempt \(attempt): \(lastProblem)" + (delay.map { "; next in \(Int($0.milliseconds)) ms" } ?? "")))
                guard let delay else { break }
                try? await Task.sleep(for: delay)
                if Task.isCancelled || stopped.withLock({ $0 }) {
                    state.withLock { _ = $0.running.remove(id) }
                    return
                }
            }
        }
        metrics.abandoned.increment()
        await record(TraceEvent(jobID: id, stage: .callbackAbandoned, attempt: attemptOfJob, worker: identity, status: result.status,
                                detail: "\(configuration.maxAttempts) attempts failed; last: \(lastProblem)"))
        finish(id)
    }

    func backoff(_ attempt: Int) -> Duration {
        let base = configuration.baseDelay.milliseconds * pow(2, Double(attempt - 1))
        return .milliseconds(Int64(min(base, configuration.maxDelay.milliseconds)))
    }

    /// Writes a trace event and waits for its acknowledgement (retrying while Kafka refuses): a
    /// delivery counts as done only once its event is durable.
    private func record(_ event: TraceEvent) async {
        guard let value = try? LeveeJSON.encode(event) else { return }
        let record = ProducerRecord(topic: connection.layout.trace, key: Array(event.jobID.description.utf8), value: Array(value))
        for _ in 0..<10 {
            if (try? await producer.send(record)) != nil { return }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    struct DeliveryProblem: Error, CustomStringConvertible {
        var description: String
    }

    /// One signed POST; success is the 2xx status.
    func post(_ url: String, body: [UInt8], id: JobID, attempt: Int) async -> Result<Int, DeliveryProblem> {
        guard let target = URL(string: url) else { return .failure(DeliveryProblem(description: "not a URL")) }
        var request = URLRequest(url: target, timeoutInterval: configuration.attemptTimeout.milliseconds / 1000)
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue(id.description, forHTTPHeaderField: "Levee-Delivery-Id")
        request.setValue(String(attempt), forHTTPHeaderField: "Levee-Delivery-Attempt")
        request.setValue(Self.signature(secret: configuration.secret, body: body, at: Int64(Date().timeIntervalSince1970)),
                         forHTTPHeaderField: "Levee-Signature")
        return await withCheckedContinuation { continuation in
            let task = CallbackSession.shared.session.dataTask(with: request) { _, response, error in
                if let error {
                    continuation.resume(returning: .failure(DeliveryProblem(description: error.localizedDescription)))
                } else if let status = (response as? HTTPURLResponse)?.statusCode {
                    continuation.resume(returning: (200..<300).contains(status) ? .success(status)
                        : .failure(DeliveryProblem(description: "HTTP \(status)" + ((300..<400).contains(status) ? " (redirects are not followed)" : ""))))
                } else {
                    continuation.resume(returning: .failure(DeliveryProblem(description: "no HTTP response")))
                }
            }
            task.resume()
        }
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the time is signed too, so
    /// a receiver can refuse old replays.
    public static func signature(secret: [UInt8], body: [UInt8], at unixSeconds: Int64) -> String {
        "t=\(unixSeconds),v1=" + HMACSHA256.hex(key: secret, message: Array("\(unixSeconds).".utf8) + body)
    }

    static func hostOf(_ url: String) -> String { URLComponents(string: url)?.host ?? "?" }

    static func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard haystack.count >= n.count else { return false }
        var i = 0
        while i <= haystack.count - n.count {
            if haystack[i] == n[0] && Array(haystack[i..<(i + n.count)]) == n { return true }
            i += 1
        }
        return false
    }
}

/// The URLSession deliveries use: never follows a redirect (a redirect could lead off the allow-list).
final class CallbackSession: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    // @unchecked: immutable after init; URLSession is thread-safe.
    static let shared = CallbackSession()
    private(set) var session: URLSession!

    override init() {
        super.init()
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        configuration.urlCache = nil
        session = URLSession(configuration: configuration, delegate: self, delegateQueue: nil)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}

/// The dispatcher's Prometheus series.
struct CallbackMetrics: Sendable {
    let delivered: Counter
    let failedAttempts: Counter
    let abandoned: Counter
    let pending: Gauge

    init(_ r: MetricsRegistry) {
        delivered = r.counter("levee_callbacks_delivered_total", help: "Callbacks answered 2xx.")
        failedAttempts = r.counter("levee_callbacks_failed_attempts_total", help: "Callback attempts that failed (retried unless the last).")
        abandoned = r.counter("levee_callbacks_abandoned_total", help: "Callbacks given up (attempts exhausted or host not allowed).")
        pending = r.gauge("levee_callbacks_pending", help: "Jobs with a callback_url not yet delivered or abandoned (known to this dispatcher).")
    }
}
