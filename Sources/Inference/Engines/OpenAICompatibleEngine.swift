import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

/// Where and how to reach an OpenAI-compatible server (vLLM, llama.cpp server, TGI, ...).
public struct OpenAICompatibleConfiguration: Sendable, Equatable {
    /// The server, with or without the trailing `/v1` (`http://gpu-1:8000` or `http://gpu-1:8000/v1`).
    public var baseURL: URL
    /// Sent as `Authorization: Bearer <key>` when set.
    public var apiKey: String?
    /// The model name the server serves (sent in every request unless the request names one).
    public var model: String
    /// Longest time one request may take, connection to last byte.
    public var requestTimeout: Duration
    /// Send `top_k` and `repetition_penalty` (vLLM and llama.cpp accept them; strict OpenAI
    /// servers may reject unknown fields, so they can be turned off).
    public var sendExtendedSampling: Bool

    public init(baseURL: URL, apiKey: String? = nil, model: String, requestTimeout: Duration = .seconds(120),
                sendExtendedSampling: Bool = true) {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.model = model
        self.requestTimeout = requestTimeout
        self.sendExtendedSampling = sendExtendedSampling
    }
}

/// An engine that forwards each request to an OpenAI-compatible HTTP server: chats to
/// `/v1/chat/completions`, text prompts to `/v1/completions`, without streaming (`onText`
/// receives the whole text once, when the response arrives). Failures are classified as
/// `InferenceError`s: connection failures are `.backendUnreachable` and timeouts `.timeout`
/// (both retriable), HTTP 5xx/429 are retriable `.backendError`, 400/422 are `.invalidRequest`,
/// a 404 naming the model is `.unknownModel`, and a body that is not OpenAI JSON is
/// `.backendError(status: 0)`. Token ids are not available over this API (`tokenIDs` is empty);
/// token counts come from the response's `usage`.
public final class OpenAICompatibleEngine: InferenceEngine {
    public let name = "openai-compatible"
    public var modelID: String { configuration.model }
    public let configuration: OpenAICompatibleConfiguration
    private let session: URLSession

    public init(configuration: OpenAICompatibleConfiguration) {
        self.configuration = configuration
        let sessionConfiguration = URLSessionConfiguration.ephemeral
        let seconds = Self.seconds(configuration.requestTimeout)
        sessionConfiguration.timeoutIntervalForRequest = seconds
        sessionConfiguration.timeoutIntervalForResource = seconds
        sessionConfiguration.httpMaximumConnectionsPerHost = 64
        session = URLSession(configuration: sessionConfiguration)
    }

    deinit { session.invalidateAndCancel() }

    /// The URL of an API path such as "chat/completions".
    func endpoint(_ path: String) -> URL {
        var base = configuration.baseURL.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        if !base.hasSuffix("/v1") { base += "/v1" }
        return URL(string: base + "/" + path)!
    }

    public func generate(_ request: GenerationRequest, onText: (@Sendable (String) -> Void)?) async throws -> GenerationResult {
        try request.sampling.validate()
        let model = request.model ?? configuration.model
        let started = ContinuousClock.now
        let isChat: Bool
        if case .chat = request.prompt { isChat = true } else { isChat = false }
        let url = endpoint(isChat ? "chat/completions" : "completions")
        var httpRequest = URLRequest(url: url)
        httpRequest.httpMethod = "POST"
        httpRequest.timeoutInterval = Self.seconds(configuration.requestTimeout)
        httpRequest.setValue("application/json", forHTTPHeaderField: "Content-Type")
        httpRequest.setValue("application/json", forHTTPHeaderField: "Accept")
        if let key = configuration.apiKey, !key.isEmpty {
            httpRequest.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        }
        httpRequest.httpBody = try requestBody(request, model: model)

        if Task.isCancelled { return Self.cancelledResult(model: model, started: started) }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await send(httpRequest)
        } catch let error as URLError {
            if error.code == .cancelled || Task.isCancelled { return Self.cancelledResult(model: model, started: started) }
            throw Self.classify(error, url: url, timeout: configuration.requestTimeout)
        }
        guard let http = response as? HTTPURLResponse else {
            throw InferenceError.backendError(status: 0, "\(url) did not answer with HTTP")
        }
        guard (200..<300).contains(http.statusCode) else {
            throw Self.classify(status: http.statusCode, body: data, url: url, model: model, requestID: request.id)
        }
        var result = try Self.parse(data, chat: isChat, url: url, model: model)
        let total = Self.milliseconds(ContinuousClock.now - started)
        if result.timings.totalMilliseconds == 0 {
            result.timings.totalMilliseconds = total
            result.timings.firstTokenMilliseconds = total
        } else {
            result.timings.totalMilliseconds = total
        }
        if let onText, !result.text.isEmpty { onText(result.text) }
        return result
    }

    // MARK: - Request

    private struct Message: Encodable { var role: String; var content: String }

    private struct Body: Encodable {
        var model: String
        var messages: [Message]?
        var prompt: String?
        var max_tokens: Int
        var temperature: Float
        var top_p: Float
        var top_k: Int?
        var repetition_penalty: Float?
        var seed: Int64?
        var stop: [String]?
        var stream = false
    }

    func requestBody(_ request: GenerationRequest, model: String) throws -> Data {
        let sampling = request.sampling
        var body = Body(model: model, max_tokens: sampling.maxTokens, temperature: sampling.temperature, top_p: sampling.topP)
        switch request.prompt {
        case .chat(let messages): body.messages = messages.map { Message(role: $0.role.rawValue, content: $0.content) }
        case .text(let text): body.prompt = text
        }
        if configuration.sendExtendedSampling {
            if sampling.topK > 0 { body.top_k = sampling.topK }
            if sampling.repetitionPenalty != 1 { body.repetition_penalty = sampling.repetitionPenalty }
        }
        // OpenAI's seed is a signed 64-bit integer.
        if let seed = sampling.seed { body.seed = Int64(bitPattern: seed & UInt64(Int64.max)) }
        if !sampling.stop.isEmpty { body.stop = sampling.stop }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(body)
    }

    // MARK: - Transport

    /// One data task, cancelled when the calling task is. (Written out rather than using
    /// `URLSession.data(for:)` so cancellation behaves the same on every Foundation.)
    private func send(_ request: URLRequest) async throws -> (Data, URLResponse) {
        let handle = TaskHandle()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Data, URLResponse), any Error>) in
                let task = session.dataTask(with: request) { data, response, error in
                    if let error {
                        continuation.resume(throwing: (error as? URLError) ?? URLError(.unknown, userInfo: [NSUnderlyingErrorKey: error]))
                    } else if let response {
                        continuation.resume(returning: (data ?? Data(), response))
                    } else {
                        continuation.resume(throwing: URLError(.badServerResponse))
                    }
                }
                handle.start(task)
            }
        } onCancel: {
            handle.cancel()
        }
    }

    /// The running data task, so cancellation can reach it whichever comes first.
    private final class TaskHandle: Sendable {
        private struct State: @unchecked Sendable { // URLSessionDataTask is thread-safe to cancel and resume
            var task: URLSessionDataTask?
            var cancelled = false
        }
        private let state = Mutex(State())

        func start(_ task: URLSessionDataTask) {
            let cancelled = state.withLock { state -> Bool in
                state.task = task
                return state.cancelled
            }
            if cancelled { task.cancel() } else { task.resume() }
        }

        func cancel() {
            let task = state.withLock { state -> URLSessionDataTask? in
                state.cancelled = true
                return state.task
            }
            task?.cancel()
        }
    }

    // MARK: - Response

    private struct ChatResponse: Decodable {
        struct Choice: Decodable {
            struct Message: Decodable { var content: String? }
            var message: Message?
            var text: String?
            var finish_reason: String?
        }
        struct Usage: Decodable { var prompt_tokens: Int?; var completion_tokens: Int? }
        /// llama.cpp server extension.
        struct Timings: Decodable { var prompt_ms: Double?; var predicted_ms: Double? }
        var model: String?
        var choices: [Choice]
        var usage: Usage?
        var timings: Timings?
    }

    static func parse(_ data: Data, chat: Bool, url: URL, model: String) throws -> GenerationResult {
        let response: ChatResponse
        do {
            response = try JSONDecoder().decode(ChatResponse.self, from: data)
        } catch {
            throw InferenceError.backendError(status: 0, "\(url) answered 2xx with a body that is not an OpenAI completion (\(snippet(data)))")
        }
        guard let choice = response.choices.first else {
            throw InferenceError.backendError(status: 0, "\(url) answered with no choices")
        }
        guard let text = chat ? choice.message?.content : choice.text else {
            throw InferenceError.backendError(status: 0, "\(url) answered without \(chat ? "choices[0].message.content" : "choices[0].text")")
        }
        let finish: FinishReason = choice.finish_reason == "length" ? .length : .stop
        var timings = GenerationTimings()
        if let t = response.timings {
            timings.promptMilliseconds = t.prompt_ms ?? 0
            timings.decodeMilliseconds = t.predicted_ms ?? 0
            timings.firstTokenMilliseconds = t.prompt_ms ?? 0
        }
        return GenerationResult(
            text: text, tokenIDs: [],
            promptTokens: response.usage?.prompt_tokens ?? 0,
            completionTokens: response.usage?.completion_tokens ?? 0,
            finishReason: finish, timings: timings, model: response.model ?? model)
    }

    static func classify(_ error: URLError, url: URL, timeout: Duration) -> InferenceError {
        switch error.code {
        case .timedOut:
            return .timeout("\(url) did not answer within \(timeout)")
        case .cannotConnectToHost, .cannotFindHost, .dnsLookupFailed, .networkConnectionLost,
             .notConnectedToInternet, .secureConnectionFailed, .cannotLoadFromNetwork, .resourceUnavailable:
            return .backendUnreachable("\(url): \(error.localizedDescription) (URLError \(error.code.rawValue))")
        case .badServerResponse, .cannotParseResponse, .zeroByteResource:
            return .backendError(status: 0, "\(url): \(error.localizedDescription)")
        default:
            return .backendUnreachable("\(url): \(error.localizedDescription) (URLError \(error.code.rawValue))")
        }
    }

    static func classify(status: Int, body: Data, url: URL, model: String, requestID: String) -> InferenceError {
        let message = errorMessage(body)
        let context = "\(url) answered HTTP \(status) for \(requestID): \(message)"
        switch status {
        case 404 where message.lowercased().contains("model"):
            return InferenceError(.unknownModel, "model '\(model)' is not served at \(url) (\(message))")
        case 400, 413, 422:
            return .invalidRequest(context)
        default:
            return .backendError(status: status, context)
        }
    }

    /// `{"error": {"message": ...}}`, `{"error": "..."}` or `{"message": ...}`, else the body's start.
    static func errorMessage(_ body: Data) -> String {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] {
            if let error = object["error"] as? [String: Any], let message = error["message"] as? String { return message }
            if let error = object["error"] as? String { return error }
            if let message = object["message"] as? String { return message }
            if let detail = object["detail"] as? String { return detail }
        }
        return snippet(body)
    }

    static func snippet(_ data: Data) -> String {
        let text = String(decoding: data.prefix(300), as: UTF8.self)
        return text.isEmpty ? "empty body" : text
    }

    private static func cancelledResult(model: String, started: ContinuousClock.Instant) -> GenerationResult {
        let total = milliseconds(ContinuousClock.now - started)
        return GenerationResult(text: "", promptTokens: 0, completionTokens: 0, finishReason: .cancelled,
                                timings: GenerationTimings(totalMilliseconds: total), model: model)
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        let (seconds, attoseconds) = duration.components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }

    static func milliseconds(_ duration: Duration) -> Double { seconds(duration) * 1000 }
}
