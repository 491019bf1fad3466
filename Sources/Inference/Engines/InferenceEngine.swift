import Foundation

/// Something that turns a prompt into generated text: the local GGUF model, an OpenAI-compatible
/// HTTP backend, or the synthetic engine used by benchmarks and chaos tests.
///
/// Cancellation contract (all engines): when the calling task is cancelled, the engine stops
/// between tokens (or abandons its HTTP request) and **returns normally** with
/// `finishReason == .cancelled`, carrying whatever text was produced so far. Engines never throw
/// `CancellationError` for task cancellation; callers that want an error can call
/// `GenerationResult.throwIfCancelled()`. Every other failure is thrown as an `InferenceError`.
public protocol InferenceEngine: Sendable {
    /// The engine kind: "local-gguf", "openai-compatible" or "synthetic".
    var name: String { get }
    /// The model this engine serves by default (a file name, or the backend's model name).
    var modelID: String { get }
    /// Generates a completion. `onText` receives the text as it is produced, in pieces that are
    /// whole UTF-8 characters and never contain (part of) a stop string; the pieces concatenate
    /// to `GenerationResult.text`.
    func generate(_ request: GenerationRequest, onText: (@Sendable (String) -> Void)?) async throws -> GenerationResult
}

extension InferenceEngine {
    /// Generates without streaming.
    public func generate(_ request: GenerationRequest) async throws -> GenerationResult {
        try await generate(request, onText: nil)
    }
}

/// One message of a chat conversation.
public struct ChatMessage: Codable, Sendable, Equatable, Hashable {
    /// Who said it. ChatML accepts any role name; these three are the usual ones.
    public struct Role: RawRepresentable, Codable, Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public init(from decoder: any Decoder) throws {
            rawValue = try decoder.singleValueContainer().decode(String.self)
        }
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(rawValue)
        }
        public var description: String { rawValue }

        public static let system: Role = "system"
        public static let user: Role = "user"
        public static let assistant: Role = "assistant"
    }

    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: .system, content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: .user, content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: .assistant, content: content) }
}

/// What to generate from: raw text (completed as is) or a chat (rendered with the model's chat
/// template, ending with the assistant's generation prompt).
public enum Prompt: Sendable, Equatable, Hashable {
    case text(String)
    case chat([ChatMessage])
}

extension Prompt: Codable {
    private enum CodingKeys: String, CodingKey { case text, messages }

    /// JSON form: `{"text": "..."}` or `{"messages": [{"role": "user", "content": "..."}]}`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let messages = try container.decodeIfPresent([ChatMessage].self, forKey: .messages) {
            self = .chat(messages)
        } else if let text = try container.decodeIfPresent(String.self, forKey: .text) {
            self = .text(text)
        } else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "a prompt needs either \"text\" or \"messages\""))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .text(let text): try container.encode(text, forKey: .text)
        case .chat(let messages): try container.encode(messages, forKey: .messages)
        }
    }
}

/// One generation to run.
public struct GenerationRequest: Codable, Sendable, Equatable {
    /// Caller's identifier (the job id in the pipeline); engines pass it through to logs and errors.
    public var id: String
    public var prompt: Prompt
    public var sampling: SamplingParameters
    /// The model to use; `nil` means the engine's own `modelID`.
    public var model: String?

    public init(id: String = UUID().uuidString, prompt: Prompt, sampling: SamplingParameters = SamplingParameters(), model: String? = nil) {
        self.id = id
        self.prompt = prompt
        self.sampling = sampling
        self.model = model
    }

    private enum CodingKeys: String, CodingKey { case id, prompt, sampling, model }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        prompt = try container.decode(Prompt.self, forKey: .prompt)
        sampling = try container.decodeIfPresent(SamplingParameters.self, forKey: .sampling) ?? SamplingParameters()
        model = try container.decodeIfPresent(String.self, forKey: .model)
    }
}

/// Why generation ended.
public enum FinishReason: String, Codable, Sendable, Equatable {
    /// End-of-sequence token or a stop string.
    case stop
    /// `maxTokens` reached.
    case length
    /// The calling task was cancelled; the text is what was produced before that.
    case cancelled
}

/// Where the time went, in milliseconds.
public struct GenerationTimings: Codable, Sendable, Equatable {
    /// Evaluating the prompt (prefill).
    public var promptMilliseconds: Double
    /// From the start of the call to the first generated token (time to first token).
    public var firstTokenMilliseconds: Double
    /// Generating tokens after the first one.
    public var decodeMilliseconds: Double
    /// The whole call.
    public var totalMilliseconds: Double

    public init(promptMilliseconds: Double = 0, firstTokenMilliseconds: Double = 0, decodeMilliseconds: Double = 0, totalMilliseconds: Double = 0) {
        self.promptMilliseconds = promptMilliseconds
        self.firstTokenMilliseconds = firstTokenMilliseconds
        self.decodeMilliseconds = decodeMilliseconds
        self.totalMilliseconds = totalMilliseconds
    }

    private enum CodingKeys: String, CodingKey {
        case promptMilliseconds = "prompt_ms"
        case firstTokenMilliseconds = "first_token_ms"
        case decodeMilliseconds = "decode_ms"
        case totalMilliseconds = "total_ms"
    }
}

/// The outcome of one generation.
public struct GenerationResult: Codable, Sendable, Equatable {
    /// Generated text, without the stop string that ended it.
    public var text: String
    /// Generated token ids (empty when the backend does not report them, e.g. over HTTP).
    public var tokenIDs: [Int32]
    public var promptTokens: Int
    public var completionTokens: Int
    public var finishReason: FinishReason
    public var timings: GenerationTimings
    /// The model that produced it.
    public var model: String

    public init(text: String, tokenIDs: [Int32] = [], promptTokens: Int, completionTokens: Int,
                finishReason: FinishReason, timings: GenerationTimings = GenerationTimings(), model: String) {
        self.text = text
        self.tokenIDs = tokenIDs
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.finishReason = finishReason
        self.timings = timings
        self.model = model
    }

    private enum CodingKeys: String, CodingKey {
        case text
        case tokenIDs = "token_ids"
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case finishReason = "finish_reason"
        case timings
        case model
    }

    /// Throws `InferenceError.cancelled` when generation was cancelled, for callers that treat
    /// cancellation as a failure.
    public func throwIfCancelled(requestID: String = "") throws(InferenceError) {
        if finishReason == .cancelled { throw InferenceError.cancelled(requestID: requestID) }
    }
}

/// A failure of inference, classified so the pipeline can decide between retrying the job,
/// failing it, or stopping the worker. `description` says what happened and what to do.
public struct InferenceError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The classes of failure the pipeline distinguishes.
    public enum Kind: Sendable, Equatable, Hashable {
        /// The request itself is wrong (bad sampling values, empty prompt, HTTP 400/422...).
        case invalidRequest
        /// The requested model is not served here (HTTP 404 for the model).
        case unknownModel
        /// The backend could not be reached (connection refused, DNS, reset).
        case backendUnreachable
        /// The backend did not answer in time.
        case timeout
        /// The backend answered with an HTTP error status, or with a body we cannot read
        /// (status 0 = malformed response).
        case backendError(status: Int)
        /// The local model file could not be loaded.
        case modelLoad
        /// Not enough memory (KV cache, context or batch too large).
        case outOfMemory
        /// The job was cancelled.
        case cancelled
    }

    public let kind: Kind
    /// What happened, with context (URL, path, value).
    public let detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    /// True when the same request may succeed if tried again later (or on another worker):
    /// unreachable backends, timeouts, 429 and 5xx responses, and memory pressure.
    public var isRetriable: Bool {
        switch kind {
        case .backendUnreachable, .timeout, .outOfMemory: return true
        case .backendError(let status): return status == 429 || status == 408 || status >= 500
        case .invalidRequest, .unknownModel, .modelLoad, .cancelled: return false
        }
    }

    /// What an operator or caller should do about it.
    public var remedy: String {
        switch kind {
        case .invalidRequest: return "fix the request; retrying it unchanged will fail again"
        case .unknownModel: return "use a model the backend serves, or configure the worker with the right model name"
        case .backendUnreachable: return "check that the inference server is running and its URL is right; the job will be retried"
        case .timeout: return "the backend is overloaded or the request too long; the job will be retried (raise the request timeout if this repeats)"
        case .backendError(let status) where status == 429 || status == 408 || status >= 500:
            return "the backend failed transiently; the job will be retried (check the server's logs if this repeats)"
        case .backendError(let status) where status == 0:
            return "the backend answered with something that is not OpenAI-compatible JSON; check the URL points at a /v1 API"
        case .backendError:
            return "the backend rejected the request; check the API key and the request"
        case .modelLoad: return "check the model path (run scripts/setup to download the default model) and that the file is a complete GGUF"
        case .outOfMemory: return "lower the batch size or context length, or give the worker more memory"
        case .cancelled: return "nothing: the job was cancelled on purpose"
        }
    }

    public var description: String {
        let label: String
        switch kind {
        case .invalidRequest: label = "invalid request"
        case .unknownModel: label = "unknown model"
        case .backendUnreachable: label = "backend unreachable"
        case .timeout: label = "timed out"
        case .backendError(let status): label = status == 0 ? "malformed backend response" : "backend error (HTTP \(status))"
        case .modelLoad: label = "model load failed"
        case .outOfMemory: label = "out of memory"
        case .cancelled: label = "cancelled"
        }
        return "\(label): \(detail) — \(remedy)"
    }

    public static func invalidRequest(_ detail: String) -> InferenceError { InferenceError(.invalidRequest, detail) }
    public static func unknownModel(_ model: String) -> InferenceError { InferenceError(.unknownModel, "model '\(model)' is not available") }
    public static func backendUnreachable(_ detail: String) -> InferenceError { InferenceError(.backendUnreachable, detail) }
    public static func timeout(_ detail: String) -> InferenceError { InferenceError(.timeout, detail) }
    public static func backendError(status: Int, _ detail: String) -> InferenceError { InferenceError(.backendError(status: status), detail) }
    public static func modelLoad(_ detail: String) -> InferenceError { InferenceError(.modelLoad, detail) }
    public static func outOfMemory(_ detail: String) -> InferenceError { InferenceError(.outOfMemory, detail) }
    public static func cancelled(requestID: String) -> InferenceError {
        InferenceError(.cancelled, requestID.isEmpty ? "generation was cancelled" : "generation of \(requestID) was cancelled")
    }
}
