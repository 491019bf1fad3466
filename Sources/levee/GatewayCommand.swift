import Foundation
import Pipeline

/// `levee gateway`: the HTTP front door for business applications in any language.
enum GatewayCommand: LeveeCommand {
    static let name = "gateway"
    static let summary = "Serve the HTTP API (submit, poll, cancel, trace jobs; callbacks) for any language"
    static let help = """
    Usage: levee gateway --http ADDR:PORT [gateway options] [connection options]

    Serves the HTTP API of schemas/openapi.yaml:
      POST   /v1/jobs                 submit (JSON body; Idempotency-Key header): 202 once Kafka acked
      GET    /v1/jobs/{id}[?wait=S]   state and, once terminal, the result (long-polls up to S seconds)
      GET    /v1/jobs/{id}/trace      the timeline and diagnosis (as levee trace --json)
      DELETE /v1/jobs/{id}            cancel
    and /metrics, /healthz, /readyz (ready once Kafka is reachable and the topics exist).
    Errors are RFC 9457 application/problem+json. SIGTERM/SIGINT: stop accepting, answer the
    requests in flight, exit.

    Gateway options:
      --http ADDR:PORT          where to listen (port 0: any free port; logged)   [LEVEE_GATEWAY_HTTP]
      --max-body-bytes N        largest POST body (default 262144); more gets 413
      --request-timeout S       the request must arrive whole within S seconds (default 5)
      --submit-timeout S        Kafka must acknowledge within S seconds, else 503 (default 10)
      --max-wait S              longest ?wait honoured (default 60)
      --max-connections N       open connections (default 512)
      --max-in-flight N         requests handled at once (default 1024); more get 503
      --tenant T                tenant of jobs that name none (default "default")
      --model NAME              model of jobs that name none (default smollm2-135m-instruct)
      --callback-hosts LIST     hosts a callback_url may name (comma-separated; host, host:port,
                                *.domain; loopback only when listed exactly). Default: none,
                                jobs with a callback_url are refused             [LEVEE_CALLBACK_HOSTS]
      --callbacks               also run the callback dispatcher in this process (see
                                levee callbacks --help; run one dispatcher per cluster)
    Bearer tokens: set LEVEE_GATEWAY_TOKENS=token1,token2 to require Authorization: Bearer <token>
    on /v1 (never printed). The callback signing secret is LEVEE_CALLBACK_SECRET.

    \(CallbacksCommand.dispatcherHelp)

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let http = try arguments.option("--http") ?? environment["LEVEE_GATEWAY_HTTP"] else {
            throw CommandFailure.usage("give --http ADDR:PORT (e.g. 0.0.0.0:8080) or set LEVEE_GATEWAY_HTTP")
        }
        let address: HTTPListenerAddress
        do { address = try HTTPListenerAddress(parsing: http) } catch { throw CommandFailure.usage("--http: \(error)") }
        var configuration = GatewayConfiguration()
        if let v = try arguments.option("--max-body-bytes", as: Int.self) {
            guard (64...16 * 1024 * 1024).contains(v) else { throw CommandFailure.usage("--max-body-bytes expects 64...16777216") }
            configuration.maxBodyBytes = v
            configuration.limits.maxRecordBytes = max(configuration.limits.maxRecordBytes, v + 4096)
        }
        configuration.requestTimeout = try seconds(&arguments, "--request-timeout") ?? configuration.requestTimeout
        configuration.submitTimeout = try seconds(&arguments, "--submit-timeout") ?? configuration.submitTimeout
        configuration.maxWait = try seconds(&arguments, "--max-wait", allowZero: true) ?? configuration.maxWait
        if let v = try arguments.option("--max-connections", as: Int.self) {
            guard (1...65_536).contains(v) else { throw CommandFailure.usage("--max-connections expects 1...65536") }
            configuration.maxConnections = v
        }
        if let v = try arguments.option("--max-in-flight", as: Int.self) {
            guard (1...100_000).contains(v) else { throw CommandFailure.usage("--max-in-flight expects 1...100000") }
            configuration.maxInFlight = v
        }
        configuration.defaultTenant = try arguments.option("--tenant") ?? configuration.defaultTenant
        configuration.defaultModel = try arguments.option("--model") ?? configuration.defaultModel
        configuration.callbackHosts = CallbackAllowList(parsing: try arguments.option("--callback-hosts") ?? environment["LEVEE_CALLBACK_HOSTS"] ?? "")
        let runCallbacks = arguments.flag("--callbacks")
        let dispatcherConfiguration = try CallbacksCommand.parseDispatcher(&arguments, hosts: configuration.callbackHosts)
        if runCallbacks { try CallbacksCommand.requireSecret(dispatcherConfiguration) }
        configuration.tokens = (environment["LEVEE_GATEWAY_TOKENS"] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()

        let metrics = MetricsRegistry()
        let gateway: Gateway
        do { gateway = try Gateway(connection: options.connection, configuration: configuration, metrics: metrics) } catch {
            throw CommandFailure.failed("cannot create the Kafka producer: \(error)")
        }
        var dispatcher: CallbackDispatcher?
        if runCallbacks {
            dispatcher = try CallbackDispatcher(connection: options.connection, configuration: dispatcherConfiguration, metrics: metrics)
        }
        let listener = HTTPListener(configuration: gateway.listenerConfiguration(address: address))
        gateway.attach(to: listener)
        let bound: HTTPListenerAddress
        do { bound = try listener.start() } catch { throw CommandFailure.failed("\(error)") }
        defer { listener.stop() }
        let auth = configuration.tokens.isEmpty ? "none (set LEVEE_GATEWAY_TOKENS to require bearer tokens)"
            : "bearer, \(configuration.tokens.count) token\(configuration.tokens.count == 1 ? "" : "s")"
        printError("levee gateway: serving http://\(bound.description)/v1/jobs and /metrics /healthz /readyz; authentication: \(auth); callback hosts: \(configuration.callbackHosts)\(dispatcher == nil ? "" : "; dispatching callbacks")")
        let callbacks = dispatcher
        do {
            try await withTerminationSignals({ gateway.shutdown(); callbacks?.shutdown() }) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await gateway.run() }
                    if let callbacks { group.addTask { try await callbacks.run() } }
                    try await group.waitForAll()
                }
            }
        } catch {
            throw CommandFailure.failed("\(error)")
        }
    }

    static func seconds(_ arguments: inout Arguments, _ name: String, allowZero: Bool = false) throws -> Duration? {
        guard let v = try arguments.option(name, as: Double.self) else { return nil }
        guard v.isFinite, allowZero ? v >= 0 : v > 0, v <= 86_400 else {
            throw CommandFailure.usage("\(name) expects seconds \(allowZero ? "≥ 0" : "> 0") (at most 86400)")
        }
        return .milliseconds(Int64(v * 1000))
    }
}
