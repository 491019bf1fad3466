import Foundation
import Inference
import Pipeline

/// `levee worker`: one member of the worker fleet.
enum WorkerCommand: LeveeCommand {
    static let name = "worker"
    static let summary = "Run a worker: consume jobs, run the model, commit one result per job"
    static let help = """
    Usage: levee worker [worker options] [engine options] [connection options]

    Joins the workers' consumer group, runs jobs on the engine and commits each job's outcome
    (result, trace events, retry or dead letter) with the input offsets in one Kafka transaction.
    Logs every trace event as a JSON line on stderr. SIGTERM/SIGINT: stop taking jobs, hand back
    queued ones, finish running ones (up to --drain-timeout), commit, leave the group.

    At start the worker waits for its brokers and topics: while they cannot be reached (or a topic
    is missing) it logs each attempt with librdkafka's reason, retries after 1 s, 2 s, 4 s ... up to
    30 s between attempts, answers /healthz 200 and /readyz 503 with the reason, and starts as
    soon as they are there. SIGTERM during the wait exits 0.

    Worker options:
      --worker-id ID          stable id: static group membership and transactional.id
                              (default <host>-<pid>)                            [LEVEE_WORKER_ID]
      --group NAME            consumer group (default <prefix>levee-workers)    [LEVEE_GROUP]
      --concurrency N         jobs at once (default 4)                          [LEVEE_CONCURRENCY]
      --delivery MODE         exactly-once (default) or at-least-once
      --commit-interval-ms N  commit outcomes at least this often (default 100)
      --job-timeout S         one attempt's limit in seconds (default 300)
      --drain-timeout S       on shutdown, wait this long for running jobs (default 30)
      --max-attempts N        attempts for retriable failures (default 4)
      --retry-base-ms N       first retry delay; doubles each attempt (default 1000)
      --heartbeat-interval-ms N  heartbeat to the workers topic this often (default 2000);
                              levee status calls a worker dead after 3 missed intervals
      --startup-timeout S     give up (exit 1) if the brokers or topics are not usable within S
                              seconds; 0 = one attempt only (default: wait forever)
                                                                                [LEVEE_STARTUP_TIMEOUT]
      --http ADDR:PORT        serve /metrics, /healthz, /readyz (port 0: any free port; the
                              address is logged)                                [LEVEE_HTTP]
      --log-content           include prompts and outputs in the logs (off by default)
      --quiet                 no event log lines (start-up problems are still logged)

    \(EngineOptions.help)

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        var configuration = WorkerConfiguration(workerID: try arguments.option("--worker-id") ?? environment["LEVEE_WORKER_ID"] ?? WorkerConfiguration.defaultWorkerID())
        let group = try arguments.option("--group") ?? environment["LEVEE_GROUP"]
        let concurrencyText = try arguments.option("--concurrency") ?? environment["LEVEE_CONCURRENCY"] ?? "4"
        guard let concurrency = Int(concurrencyText), (1...1024).contains(concurrency) else {
            throw CommandFailure.usage("--concurrency expects 1...1024, got '\(concurrencyText)'")
        }
        configuration.concurrency = concurrency
        if let mode = try arguments.option("--delivery") {
            guard let delivery = DeliveryGuarantee(rawValue: mode) else { throw CommandFailure.usage("--delivery expects exactly-once or at-least-once") }
            configuration.delivery = delivery
        }
        if let v = try arguments.option("--commit-interval-ms", as: Int.self) {
            guard v >= 1 else { throw CommandFailure.usage("--commit-interval-ms expects ≥ 1") }
            configuration.commitInterval = .milliseconds(v)
        }
        if let v = try arguments.option("--job-timeout", as: Double.self) {
            guard v > 0 else { throw CommandFailure.usage("--job-timeout expects seconds > 0") }
            configuration.jobTimeout = .milliseconds(Int64(v * 1000))
        }
        if let v = try arguments.option("--drain-timeout", as: Double.self) {
            guard v >= 0 else { throw CommandFailure.usage("--drain-timeout expects seconds ≥ 0") }
            configuration.drainTimeout = .milliseconds(Int64(v * 1000))
        }
        if let v = try arguments.option("--max-attempts", as: Int.self) {
            guard v >= 1 else { throw CommandFailure.usage("--max-attempts expects ≥ 1") }
            configuration.backoff.maxAttempts = v
        }
        if let v = try arguments.option("--retry-base-ms", as: Int64.self) {
            guard v >= 1 else { throw CommandFailure.usage("--retry-base-ms expects ≥ 1") }
            configuration.backoff.baseMilliseconds = v
        }
        if let v = try arguments.option("--heartbeat-interval-ms", as: Int64.self) {
            guard v >= 10 else { throw CommandFailure.usage("--heartbeat-interval-ms expects ≥ 10") }
            configuration.heartbeatInterval = .milliseconds(v)
        }
        var startupTimeout: Duration?
        if let text = try arguments.option("--startup-timeout") ?? environment["LEVEE_STARTUP_TIMEOUT"] {
            guard let v = Double(text), v >= 0, v.isFinite else {
                throw CommandFailure.usage("--startup-timeout expects seconds ≥ 0, got '\(text)'")
            }
            startupTimeout = .milliseconds(Int64(v * 1000))
        }
        let http = try arguments.option("--http") ?? environment["LEVEE_HTTP"]
        configuration.logContent = arguments.flag("--log-content")
        configuration.logEvents = !arguments.flag("--quiet")
        let engineOptions = try EngineOptions.parse(&arguments)
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        configuration.groupID = group ?? options.prefix + "levee-workers"
        configuration.limits.knownModels = [engineOptions.modelName, engineOptions.engine.modelID]

        let worker = Worker(connection: options.connection, configuration: configuration, engine: engineOptions.engine)
        let layout = options.connection.layout
        let gate = StartupGate(connection: options.connection,
                               topics: [layout.jobs, layout.retry, layout.results, layout.deadLetters, layout.trace, layout.workers, layout.control],
                               configuration: .init(timeout: startupTimeout))
        var listener: HTTPListener?
        if let http {
            let address: HTTPListenerAddress
            do { address = try HTTPListenerAddress(parsing: http) } catch { throw CommandFailure.usage("--http: \(error)") }
            let l = HTTPListener(configuration: .init(address: address))
            l.serveOperations(metrics: worker.metrics.registry) { gate.isOpen ? worker.readiness : gate.readiness }
            do {
                let bound = try l.start()
                printError("levee worker: serving /metrics /healthz /readyz on http://\(bound.host):\(bound.port)")
            } catch { throw CommandFailure.failed("\(error)") }
            listener = l
        }
        defer { listener?.stop() }
        do {
            try await withTerminationSignals({ gate.stop(); worker.shutdown() }) {
                // Brokers and topics first: a worker started before Kafka waits here, not in run().
                guard try await gate.wait() else { return }
                try await worker.run()
            }
        } catch let failure as StartupGate.Failure {
            throw CommandFailure.failed("\(failure)")
        } catch {
            throw CommandFailure.failed("\(error)")
        }
    }
}
