import Foundation
import Inference

/// Which engine a worker (or the demo) runs, from flags or `LEVEE_*` variables.
struct EngineOptions {
    var engine: any InferenceEngine
    /// The model name jobs must ask for.
    var modelName: String

    static let help = """
    Engine:
      --engine local|openai|synthetic   default local                           [LEVEE_ENGINE]
      --model PATH            local: the GGUF file (default: the one scripts/setup fetched) [LEVEE_MODEL]
      --model-name NAME       the model name jobs must ask for (default: smollm2-135m-instruct for
                              the default model, else the file or backend model name)
      --max-batch N           local: sequences decoded together (default 16)
      --openai-url URL        openai: base URL of a vLLM / llama.cpp server / TGI endpoint
      --openai-model NAME     openai: the backend's model name
      --openai-key-env VAR    openai: environment variable holding the API key (default OPENAI_API_KEY)
      --request-timeout S     openai: per-request timeout in seconds (default 120)
      --synthetic-delay MS[-MS]   synthetic (benchmarks and chaos tests only): fixed or uniform delay
      --synthetic-failure-rate R  synthetic: share of attempts that fail with a retriable error
      --synthetic-tokens N        synthetic: tokens per answer (default 16)
    """

    static func parse(_ arguments: inout Arguments, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> EngineOptions {
        let kind = try arguments.option("--engine") ?? environment["LEVEE_ENGINE"] ?? "local"
        let modelPath = try arguments.option("--model")
        let modelName = try arguments.option("--model-name")
        let maxBatch = try arguments.option("--max-batch", as: Int.self) ?? 16
        let url = try arguments.option("--openai-url")
        let openAIModel = try arguments.option("--openai-model")
        let keyVariable = try arguments.option("--openai-key-env") ?? "OPENAI_API_KEY"
        let timeout = try arguments.option("--request-timeout", as: Double.self) ?? 120
        let delay = try arguments.option("--synthetic-delay")
        let failureRate = try arguments.option("--synthetic-failure-rate", as: Double.self) ?? 0
        let tokens = try arguments.option("--synthetic-tokens", as: Int.self) ?? 16
        switch kind {
        case "local":
            guard (1...256).contains(maxBatch) else { throw CommandFailure.usage("--max-batch expects 1...256") }
            let path: String
            do { path = try ModelLocation.resolve(explicit: modelPath, environment: environment) } catch {
                throw CommandFailure.failed("\(error)")
            }
            let engine: LocalGGUFEngine
            do { engine = try LocalGGUFEngine(path: path, maxBatch: maxBatch) } catch { throw CommandFailure.failed("\(error)") }
            return EngineOptions(engine: engine, modelName: modelName ?? Self.friendlyName(path))
        case "openai":
            guard let url, let base = URL(string: url), base.scheme == "http" || base.scheme == "https" else {
                throw CommandFailure.usage("--engine openai needs --openai-url http(s)://host:port")
            }
            guard let openAIModel else { throw CommandFailure.usage("--engine openai needs --openai-model NAME") }
            let engine = OpenAICompatibleEngine(configuration: OpenAICompatibleConfiguration(
                baseURL: base, apiKey: environment[keyVariable], model: openAIModel, requestTimeout: .milliseconds(Int64(timeout * 1000))))
            return EngineOptions(engine: engine, modelName: modelName ?? openAIModel)
        case "synthetic":
            var configuration = SyntheticEngine.Configuration(failureRate: failureRate, tokensPerRequest: tokens)
            if let delay {
                let parts = delay.split(separator: "-").map { Double($0) }
                switch parts.count {
                case 1 where parts[0] != nil: configuration.delay = .fixed(.milliseconds(Int64(parts[0]!)))
                case 2 where parts[0] != nil && parts[1] != nil:
                    configuration.delay = .uniform(.milliseconds(Int64(parts[0]!)), .milliseconds(Int64(parts[1]!)))
                default: throw CommandFailure.usage("--synthetic-delay expects MS or MIN-MAX (milliseconds), got '\(delay)'")
                }
            }
            let engine: SyntheticEngine
            do { engine = try SyntheticEngine(configuration: configuration) } catch { throw CommandFailure.usage("\(error)") }
            return EngineOptions(engine: engine, modelName: modelName ?? "synthetic")
        default:
            throw CommandFailure.usage("--engine expects local, openai or synthetic, got '\(kind)'")
        }
    }

    /// "SmolLM2-135M-Instruct.Q4_1.gguf" → "smollm2-135m-instruct".
    static func friendlyName(_ path: String) -> String {
        var name = (path as NSString).lastPathComponent
        if name.lowercased().hasSuffix(".gguf") { name = String(name.dropLast(5)) }
        if let dot = name.lastIndex(of: "."), name[name.index(after: dot)...].uppercased().hasPrefix("Q") || name[name.index(after: dot)...].uppercased().hasPrefix("F") {
            name = String(name[..<dot])
        }
        return name.lowercased()
    }
}
