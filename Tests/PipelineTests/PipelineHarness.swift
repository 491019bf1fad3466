import Foundation
import Inference
import Kafka
import Synchronization
import Testing
@testable import Pipeline

/// A test double engine (tests only; the product's synthetic engine is Inference.SyntheticEngine):
/// answers after a delay with text derived from the prompt, stopping between "tokens" when
/// cancelled, and fails the first `failures[prompt]` attempts of a prompt with a retriable error.
final class ScriptedEngine: InferenceEngine {
    let name = "scripted-test-engine"
    let modelID = "test-model"
    let tokenDelay: Duration
    let tokens: Int
    private let failuresLeft: Mutex<[String: Int]>
    let calls = Mutex(0)

    init(tokenDelay: Duration = .milliseconds(2), tokens: Int = 4, failures: [String: Int] = [:]) {
        self.tokenDelay = tokenDelay
        self.tokens = tokens
        self.failuresLeft = Mutex(failures)
    }

    func generate(_ request: GenerationRequest, onText: (@Sendable (String) -> Void)?) async throws -> GenerationResult {
        calls.withLock { $0 += 1 }
        let prompt: String
        switch request.prompt {
        case .text(let text): prompt = text
        case .chat(let messages): prompt = messages.last?.content ?? ""
        }
        let fail = failuresLeft.withLock { f -> Bool in
            guard let left = f[prompt], left > 0 else { return false }
            f[prompt] = left - 1
            return true
        }
        if fail { throw InferenceError(.backendUnreachable, "scripted failure for '\(prompt)'") }
        var text = ""
        for i in 0..<min(tokens, request.sampling.maxTokens) {
            if Task.isCancelled {
                return GenerationResult(text: text, promptTokens: 1, completionTokens: i, finishReason: .cancelled, timings: .init(), model: modelID)
            }
            try? await Task.sleep(for: tokenDelay)
            text += i == 0 ? "echo:\(prompt)" : "."
        }
        return GenerationResult(text: text, promptTokens: 1, completionTokens: tokens, finishReason: .length, timings: .init(), model: modelID)
    }
}

/// An embedded cluster with Levee's topics under a unique prefix, and helpers to run workers.
struct PipelineHarness {
    let cluster: EmbeddedCluster
    let connection: KafkaConnection

    init(partitions: Int = 4, brokers: Int = 1) throws {
        cluster = try EmbeddedCluster(brokers: brokers)
        let layout = TopicLayout(prefix: "t\(UUID().uuidString.prefix(8).lowercased()).", partitions: partitions)
        connection = KafkaConnection(bootstrapServers: cluster.bootstrapServers, layout: layout)
        _ = try TopicProvisioner.ensureTopics(layout, on: cluster)
    }

    func workerConfiguration(_ id: String, concurrency: Int = 4) -> WorkerConfiguration {
        var c = WorkerConfiguration(workerID: id)
        c.groupID = connection.layout.prefix + "workers"
        c.concurrency = concurrency
        c.commitInterval = .milliseconds(50)
        c.heartbeatInterval = .milliseconds(500)
        c.backoff = Backoff(baseMilliseconds: 50, maxMilliseconds: 200, maxAttempts: 4)
        c.logEvents = ProcessInfo.processInfo.environment["LEVEE_TEST_LOGS"] != nil
        c.consumerProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]
        return c
    }

    func chatJob(_ text: String, change: (inout JobEnvelope) -> Void = { _ in }) -> JobEnvelope {
        var job = JobClient.makeJob(tenant: "test", kind: .chat, model: "test-model",
                                    input: JobInput(messages: [ChatTurn(role: "user", content: text)]),
                                    params: JobParameters(maxTokens: 8, temperature: 0))
        change(&job)
        return job
    }
}
