import Foundation
import Pipeline

/// `levee callbacks`: the completion-callback dispatcher as its own process.
enum CallbacksCommand: LeveeCommand {
    static let name = "callbacks"
    static let summary = "Deliver completion callbacks (POST each job's result to its callback_url, signed)"
    static let help = """
    Usage: levee callbacks --callback-hosts LIST [dispatcher options] [--http ADDR:PORT] [connection options]

    For every job whose record has a callback_url, POSTs its terminal result there once it
    exists: the body of GET /v1/jobs/{id}, with Levee-Delivery-Id (the job id: receivers drop
    repeats), Levee-Delivery-Attempt and Levee-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
    "<t>.<body>")>. Retried with exponential backoff; each attempt is a trace event
    (callback_failed, callback_delivered, callback_abandoned: see levee trace). Delivery is at
    least once: the trace events are the dispatcher's durable memory, so a restart does not send
    delivered callbacks again, except one whose 2xx arrived just before a crash. Run one
    dispatcher per cluster (or levee gateway --callbacks on one gateway).

      --callback-hosts LIST     hosts callbacks may go to (comma-separated: host, host:port,
                                *.domain; loopback only when listed exactly)   [LEVEE_CALLBACK_HOSTS]
      --http ADDR:PORT          serve /metrics /healthz /readyz                [LEVEE_HTTP]

    \(dispatcherHelp)

    \(ConnectionOptions.help)
    """

    static let dispatcherHelp = """
    Callback dispatcher options (the signing secret is LEVEE_CALLBACK_SECRET, required):
      --callback-attempts N     attempts per job before callback_abandoned (default 8)
      --callback-retry-ms N     first retry delay; doubles per attempt up to 5 min (default 1000)
      --callback-timeout S      one attempt's limit (default 10)
    """

    static func parseDispatcher(_ arguments: inout Arguments, hosts: CallbackAllowList) throws -> CallbackDispatcherConfiguration {
        var configuration = CallbackDispatcherConfiguration()
        configuration.hosts = hosts
        configuration.secret = Array((ProcessInfo.processInfo.environment["LEVEE_CALLBACK_SECRET"] ?? "").utf8)
        if let v = try arguments.option("--callback-attempts", as: Int.self) {
            guard (1...100).contains(v) else { throw CommandFailure.usage("--callback-attempts expects 1...100") }
            configuration.maxAttempts = v
        }
        if let v = try arguments.option("--callback-retry-ms", as: Int64.self) {
            guard v >= 1 else { throw CommandFailure.usage("--callback-retry-ms expects ≥ 1") }
            configuration.baseDelay = .milliseconds(v)
        }
        if let v = try arguments.option("--callback-timeout", as: Double.self) {
            guard v > 0, v <= 300 else { throw CommandFailure.usage("--callback-timeout expects seconds in (0, 300]") }
            configuration.attemptTimeout = .milliseconds(Int64(v * 1000))
        }
        return configuration
    }

    static func requireSecret(_ configuration: CallbackDispatcherConfiguration) throws {
        if configuration.secret.isEmpty {
            throw CommandFailure.usage("set LEVEE_CALLBACK_SECRET: every callback is signed with it (receivers verify Levee-Signature)")
        }
        if configuration.hosts.isEmpty {
            throw CommandFailure.usage("give --callback-hosts (or LEVEE_CALLBACK_HOSTS): no callback goes to a host not listed")
        }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        let hosts = CallbackAllowList(parsing: try arguments.option("--callback-hosts") ?? environment["LEVEE_CALLBACK_HOSTS"] ?? "")
        let http = try arguments.option("--http") ?? environment["LEVEE_HTTP"]
        let configuration = try parseDispatcher(&arguments, hosts: hosts)
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        try requireSecret(configuration)
        let metrics = MetricsRegistry()
        let dispatcher = try CallbackDispatcher(connection: options.connection, configuration: configuration, metrics: metrics)
        var listener: HTTPListener?
        if let http {
            let address: HTTPListenerAddress
            do { address = try HTTPListenerAddress(parsing: http) } catch { throw CommandFailure.usage("--http: \(error)") }
            let l = HTTPListener(configuration: .init(address: address))
            l.serveOperations(metrics: metrics) { .ready }
            do { _ = try l.start() } catch { throw CommandFailure.failed("\(error)") }
            listener = l
        }
        defer { listener?.stop() }
        printError("levee callbacks: delivering to \(hosts)" + (listener?.boundAddress.map { "; serving /metrics on http://\($0)" } ?? ""))
        try await withTerminationSignals({ dispatcher.shutdown() }) {
            try await dispatcher.run()
        }
    }
}
