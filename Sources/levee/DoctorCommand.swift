import Foundation
import Inference
import Pipeline

/// `levee doctor`: pre-flight checks, each failure with its fix.
enum DoctorCommand: LeveeCommand {
    static let name = "doctor"
    static let summary = "Check brokers, topics, transactions, the model and memory before you start"
    static let help = """
    Usage: levee doctor [--json] [--concurrency N] [--model-sha256 HEX] [--timeout S]
                        [--delivery exactly-once|at-least-once] [engine options] [connection options]

    Runs pre-flight checks with the settings a worker would use, and prints one line per check
    (ok, WARN, FAIL or skip) with the fix under each WARN and FAIL:
      librdkafka      the loaded version, and the features the security settings need
      brokers         metadata from the bootstrap servers, within --timeout
      topic <name>    each Levee topic: present, the partition count of --partitions, and its
                      configs (cleanup.policy=compact on results, workers and control; retention
                      on jobs, retry, trace and the DLQ)
      replication     replication factor and min.insync.replicas against the broker count
      transactions    a throwaway transactional.id registered with the coordinator
      model           the GGUF file: present, its sha256 (the default model's is known; pin
                      others with --model-sha256), and loadable
      memory          available memory (MemAvailable, or the container's limit) against the model
                      plus a KV cache per concurrent sequence
      openai backend  GET /v1/models on --openai-url, with the key, serving --openai-model
    Exits 0 when nothing failed (warnings allowed), 1 otherwise. Secrets are never printed.

      --json               one JSON object (schema levee.doctor/v1) instead of text
      --concurrency N      jobs a worker runs at once (default 4)               [LEVEE_CONCURRENCY]
      --model-sha256 HEX   the model file's expected sha256
      --timeout S          bound of each network check in seconds (default 10)
      --delivery MODE      at-least-once skips the transactions check

    Engine (as for levee worker; the model is checked, not loaded):
      --engine local|openai|synthetic   default local                           [LEVEE_ENGINE]
      --model PATH            local: the GGUF file (default: the one scripts/setup fetched) [LEVEE_MODEL]
      --max-batch N           local: sequences decoded together (default 16)
      --openai-url URL        openai: base URL of a vLLM / llama.cpp server / TGI endpoint
      --openai-model NAME     openai: the backend's model name
      --openai-key-env VAR    openai: environment variable holding the API key (default OPENAI_API_KEY)

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        let json = arguments.flag("--json")
        let concurrencyText = try arguments.option("--concurrency") ?? environment["LEVEE_CONCURRENCY"] ?? "4"
        guard let concurrency = Int(concurrencyText), (1...1024).contains(concurrency) else {
            throw CommandFailure.usage("--concurrency expects 1...1024, got '\(concurrencyText)'")
        }
        let sha = try arguments.option("--model-sha256")
        if let sha, sha.count != 64 || !sha.allSatisfy(\.isHexDigit) {
            throw CommandFailure.usage("--model-sha256 expects 64 hex digits, got '\(sha)'")
        }
        let timeout = try arguments.option("--timeout", as: Double.self) ?? 10
        guard timeout > 0, timeout <= 600 else { throw CommandFailure.usage("--timeout expects seconds in (0, 600]") }
        let delivery = try arguments.option("--delivery") ?? "exactly-once"
        guard ["exactly-once", "at-least-once"].contains(delivery) else {
            throw CommandFailure.usage("--delivery expects exactly-once or at-least-once")
        }
        let engine = try parseEngine(&arguments, environment: environment)
        let options = try ConnectionOptions.parse(&arguments, environment: environment, requireBrokers: false)
        try arguments.finish()

        let configuration = DoctorConfiguration(
            connection: options.connection, engine: engine, concurrency: concurrency, expectedModelSHA256: sha,
            timeout: .milliseconds(Int64(timeout * 1000)), checkTransactions: delivery == "exactly-once")
        let report = await Doctor.run(configuration)
        if json {
            try printJSON(report)
        } else {
            printOut(render(report))
        }
        if !report.ok {
            let failed = report.checks(.fail).map(\.name)
            throw CommandFailure.failed("\(failed.count) check\(failed.count == 1 ? "" : "s") failed: \(failed.joined(separator: ", "))")
        }
    }

    /// The engine as a worker would configure it, without loading anything.
    static func parseEngine(_ arguments: inout Arguments, environment: [String: String]) throws -> DoctorConfiguration.Engine {
        let kind = try arguments.option("--engine") ?? environment["LEVEE_ENGINE"] ?? "local"
        let model = try arguments.option("--model")
        let maxBatch = try arguments.option("--max-batch", as: Int.self) ?? 16
        let url = try arguments.option("--openai-url")
        let openAIModel = try arguments.option("--openai-model")
        let keyVariable = try arguments.option("--openai-key-env") ?? "OPENAI_API_KEY"
        // Accepted so a worker's command line can be checked as it is; they change nothing here.
        for ignored in ["--model-name", "--request-timeout", "--synthetic-delay", "--synthetic-failure-rate", "--synthetic-tokens"] {
            _ = try arguments.option(ignored)
        }
        switch kind {
        case "local":
            guard (1...256).contains(maxBatch) else { throw CommandFailure.usage("--max-batch expects 1...256") }
            let path: String
            do {
                path = try ModelLocation.resolve(explicit: model, environment: environment)
            } catch {
                // Missing: report it as a failed check (with the fix) rather than a usage error.
                path = model ?? environment["LEVEE_MODEL"].flatMap { $0.isEmpty ? nil : $0 } ?? ModelLocation.defaultPath(environment: environment)
            }
            return .local(modelPath: path, maxBatch: maxBatch)
        case "openai":
            guard let url, let base = URL(string: url), base.scheme == "http" || base.scheme == "https" else {
                throw CommandFailure.usage("--engine openai needs --openai-url http(s)://host:port")
            }
            guard let openAIModel else { throw CommandFailure.usage("--engine openai needs --openai-model NAME") }
            return .openAI(baseURL: base, model: openAIModel, apiKey: environment[keyVariable], keySource: keyVariable)
        case "synthetic":
            return .synthetic
        default:
            throw CommandFailure.usage("--engine expects local, openai or synthetic, got '\(kind)'")
        }
    }

    static func render(_ report: DoctorReport) -> String {
        var out = ""
        for check in report.checks {
            let mark: String
            switch check.status {
            case .ok: mark = "ok  "
            case .warn: mark = "WARN"
            case .fail: mark = "FAIL"
            case .skip: mark = "skip"
            }
            out += "\(mark)  \(check.name): \(check.detail)\n"
            if let fix = check.fix, check.status == .warn || check.status == .fail {
                out += "      fix: \(fix)\n"
            }
        }
        let c = report.counts
        out += report.ok
            ? "doctor: ready — \(c["ok"] ?? 0) ok, \(c["warn"] ?? 0) warnings, \(c["skip"] ?? 0) skipped\n"
            : "doctor: NOT READY — \(c["fail"] ?? 0) failed, \(c["warn"] ?? 0) warnings, \(c["ok"] ?? 0) ok\n"
        return out
    }
}
