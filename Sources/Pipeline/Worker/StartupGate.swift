import Foundation
import Kafka
import Synchronization

/// Holds a worker back at start-up until its brokers answer and its topics exist, so that a
/// worker started before Kafka (a container starting next to its brokers, a broker restarting,
/// a topic-init job still running) waits instead of exiting, and says why.
///
/// Each failed attempt is one JSON log line on stderr naming the brokers and librdkafka's own
/// reason (e.g. "Connect to ipv4#127.0.0.1:1 failed: Connection refused"); attempts are spaced by a
/// backoff that starts at `initialDelay` and doubles up to `maxDelay`. While waiting, `readiness`
/// says what is missing (for `/readyz`). `stop()` (SIGTERM) ends the wait at once.
public final class StartupGate: Sendable {
    /// How long and how often to try.
    public struct Configuration: Sendable, Equatable {
        /// Delay after the first failed attempt; doubles after each further one.
        public var initialDelay: Duration = .seconds(1)
        /// The longest delay between attempts.
        public var maxDelay: Duration = .seconds(30)
        /// Give up (throw) once this much time has passed; `nil` waits forever; `.zero` makes a
        /// single attempt.
        public var timeout: Duration?
        /// The longest one attempt (a metadata request) may take.
        public var attemptTimeout: Duration = .seconds(5)
        /// Write a log line per failed attempt (and one when the gate opens after failures).
        public var log = true

        public init(timeout: Duration? = nil) { self.timeout = timeout }
    }

    /// The wait ended without the brokers or topics becoming usable within `timeout`.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var brokers: String
        public var reason: String
        public var attempts: Int
        public var waited: Duration
        public var description: String {
            "\(reason); gave up after \(attempts) attempt\(attempts == 1 ? "" : "s") in \(StartupGate.seconds(waited)) (--startup-timeout)"
        }
    }

    /// The outcome of one attempt.
    enum Check: Sendable, Equatable {
        case ready
        /// The brokers did not answer; librdkafka's reason.
        case unreachable(String)
        /// The brokers answered but these topics do not exist.
        case topicsMissing([String])
    }

    private struct State {
        var open = false
        var stopped = false
        var attempts = 0
        var problem: String?
        /// A suspended wait (an attempt or a backoff delay) that `stop()` or the attempt's own
        /// outcome resumes, whichever comes first; `waitID` tells stale resumers apart.
        var pending: CheckedContinuation<Check?, Never>?
        var waitID = 0
    }

    public let connection: KafkaConnection
    public let topics: [String]
    public let configuration: Configuration
    private let state = Mutex(State())

    /// - Parameters:
    ///   - topics: the topics that must exist before the gate opens (e.g. all of the layout's).
    public init(connection: KafkaConnection, topics: [String], configuration: Configuration = .init()) {
        self.connection = connection
        self.topics = topics
        self.configuration = configuration
    }

    /// True once the brokers answered and every topic exists.
    public var isOpen: Bool { state.withLock { $0.open } }

    /// Why the gate is still closed (for `/readyz`); ready once open.
    public var readiness: Readiness {
        state.withLock { s in
            if s.open { return .ready }
            if let problem = s.problem { return Readiness(reasons: [problem]) }
            return Readiness(reasons: ["connecting to the Kafka brokers at \(connection.bootstrapServers)"])
        }
    }

    /// Ends `wait()` at once (it returns false).
    public func stop() {
        let pending = state.withLock { s -> CheckedContinuation<Check?, Never>? in
            s.stopped = true
            defer { s.pending = nil }
            return s.pending
        }
        pending?.resume(returning: nil)
    }

    /// Waits until the brokers answer and the topics exist (returns true), or until `stop()`
    /// (returns false).
    ///
    /// - Throws: ``Failure`` once `configuration.timeout` has passed without success.
    public func wait() async throws -> Bool {
        let started = ContinuousClock.now
        let deadline = configuration.timeout.map { started + $0 }
        var delay = configuration.initialDelay
        return try await withTaskCancellationHandler {
            while true {
                var attemptTimeout = configuration.attemptTimeout
                if let deadline, configuration.timeout != .zero {
                    attemptTimeout = max(.milliseconds(500), min(attemptTimeout, deadline - .now))
                }
                guard let check = try await attempt(timeout: attemptTimeout) else { return false }
                let attempt = state.withLock { s -> Int in s.attempts += 1; return s.attempts }
                let problem: String
                switch check {
                case .ready:
                    state.withLock { $0.open = true; $0.problem = nil }
                    if attempt > 1 && configuration.log {
                        LogLine(message: "Kafka brokers at \(connection.bootstrapServers) reachable and topics present after \(attempt) attempts; starting",
                                fields: ["brokers": connection.bootstrapServers, "attempt": String(attempt)]).write()
                    }
                    return true
                case .unreachable(let reason):
                    problem = "cannot reach the Kafka brokers at \(connection.bootstrapServers): \(reason)"
                case .topicsMissing(let missing):
                    problem = "the Kafka brokers at \(connection.bootstrapServers) answer but these topics are missing: "
                        + missing.joined(separator: ", ") + " (create them with `levee topics create`, or check --prefix)"
                }
                state.withLock { $0.problem = problem }
                if let deadline, ContinuousClock.now + delay > deadline {
                    // The next delay would pass the deadline: give up now if it has passed (or the
                    // timeout allowed one attempt), else make a last attempt at the deadline.
                    if ContinuousClock.now >= deadline || configuration.timeout == .zero {
                        if configuration.log { logAttempt(problem, check, attempt: attempt, retryIn: nil, level: "error") }
                        throw Failure(brokers: connection.bootstrapServers, reason: problem, attempts: attempt,
                                      waited: ContinuousClock.now - started)
                    }
                    delay = deadline - .now
                }
                if configuration.log { logAttempt(problem, check, attempt: attempt, retryIn: delay, level: attempt == 1 ? "error" : "warning") }
                let pause = delay
                guard await suspend({ _ in try? await Task.sleep(for: pause); return .ready }) != nil else { return false }
                delay = min(delay * 2, configuration.maxDelay)
            }
        } onCancel: {
            stop()
        }
    }

    /// One attempt with a fresh client (so librdkafka reports this attempt's connection errors
    /// afresh, not suppressed as repeats): the cluster's metadata, then the topics in it. Ends
    /// early when librdkafka says every broker is down. Nil when stopped.
    func attempt(timeout: Duration) async throws -> Check? {
        let probe = Probe()
        let admin = try KafkaAdmin(configuration: connection.configuration(), logHandler: { [weak self] line in
            if let (id, reason) = probe.note(line) { self?.resolve(id, .unreachable(reason)) }
        })
        let topics = self.topics
        return await suspend { id in
            if let reason = probe.start(id) { return .unreachable(reason) }
            do {
                let metadata = try await admin.metadata(timeout: timeout)
                let present = Set(metadata.topics.filter { $0.error != "UNKNOWN_TOPIC_OR_PART" }.map(\.name))
                let missing = topics.filter { !present.contains($0) }
                return missing.isEmpty ? .ready : .topicsMissing(missing)
            } catch {
                return .unreachable(probe.reason ?? "\(error)")
            }
        }
    }

    /// Runs `operation` (given this wait's id) and returns its value, or what `resolve` or
    /// `stop()` delivered first (nil for stop). The operation then finishes on its own, unobserved:
    /// it is bounded by its own timeout.
    private func suspend(_ operation: @escaping @Sendable (Int) async -> Check) async -> Check? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Check?, Never>) in
            let id = state.withLock { s -> Int? in
                if s.stopped { return nil }
                s.waitID += 1
                s.pending = continuation
                return s.waitID
            }
            guard let id else { continuation.resume(returning: nil); return }
            // Unstructured on purpose: a blocking metadata request cannot be cancelled, and a
            // SIGTERM must not wait for it.
            Task { [self] in resolve(id, await operation(id)) }
        }
    }

    /// Ends wait `id` with `value` if it is still the one pending.
    private func resolve(_ id: Int, _ value: Check) {
        let pending = state.withLock { s -> CheckedContinuation<Check?, Never>? in
            guard s.waitID == id, let p = s.pending else { return nil }
            s.pending = nil
            return p
        }
        pending?.resume(returning: value)
    }

    private func logAttempt(_ problem: String, _ check: Check, attempt: Int, retryIn: Duration?, level: String) {
        var fields = ["brokers": connection.bootstrapServers, "attempt": String(attempt)]
        switch check {
        case .unreachable(let reason): fields["reason"] = reason
        case .topicsMissing(let missing): fields["missing_topics"] = missing.joined(separator: ",")
        case .ready: break
        }
        var message = problem
        if let retryIn {
            fields["retry_in_ms"] = String(Int64(retryIn.milliseconds))
            message += "; retrying in \(Self.seconds(retryIn))"
        } else {
            message += "; giving up"
        }
        LogLine(level: level, message: message, fields: fields).write()
    }

    /// What one attempt's client reported: librdkafka's connection errors, and whether it said
    /// every broker is down (which ends the attempt at once, with the error before it as reason).
    private final class Probe: Sendable {
        private struct State {
            var waitID: Int?
            var lastError: String?
            var allDown = false
        }
        private let state = Mutex(State())

        var reason: String? { state.withLock { $0.lastError } }

        /// The attempt's wait began; returns the reason if every broker is already known down.
        func start(_ id: Int) -> String? {
            state.withLock { s in
                s.waitID = id
                return s.allDown ? s.lastError : nil
            }
        }

        /// Records a log line; returns the wait to end, and why, when every broker is down.
        func note(_ line: KafkaLogMessage) -> (Int, String)? {
            guard line.facility == "ERROR" || line.level <= 3 else { return nil }
            var text = line.message
            // Error events come as KafkaError descriptions ("… [_TRANSPORT] (client=rdkafka#producer-1)").
            if let range = text.range(of: " (client=") { text = String(text[..<range.lowerBound]) }
            return state.withLock { s -> (Int, String)? in
                if text.contains("[_ALL_BROKERS_DOWN]") {
                    s.allDown = true
                    if s.lastError == nil { s.lastError = text }
                } else {
                    s.lastError = text
                }
                guard s.allDown, let id = s.waitID, let reason = s.lastError else { return nil }
                return (id, reason)
            }
        }
    }

    static func seconds(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }
}
