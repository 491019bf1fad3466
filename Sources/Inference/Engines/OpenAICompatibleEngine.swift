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
    /// Ask for a server-sent-event stream when the caller passes `onText`, so text arrives as it
    /// is generated (with `stream_options.include_usage` for the token counts).
    public var streamsWhenObserved: Bool

    public init(baseURL: URL, apiKey: String? = nil, model: String, requestTimeout: Duration = .seconds(120),
                sendExtendedSampling: Bool = true, streamsWhenObserved: Bool = true) {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.model = model
        self.requestTimeout = requestTimeout
        self.sendExtendedSampling = sendExtendedSampling
        self.streamsWhenObserved = streamsWhenObserved
    }
}

/// An engine that forwards each request to an OpenAI-compatible HTTP server: chats to
/// `/v1/chat/completions`, text prompts to `/v1/completions`. With `onText` the response is
/// streamed (server-sent events) and each piece is passed on as it arrives; without it one JSON
/// response is read. Failures are classified as
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
        let streaming = onText != nil && configuration.streamsWhenObserved
        httpRequest.httpBody = try requestBody(request, model: model, stream: streaming)

        if Task.isCancelled { return Self.cancelledResult(model: model, started: started) }
        if streaming, let onText {
            return try await stream(httpRequest, url: url, chat: isChat, model: model, requestID: request.id, started: started, onText: onText)
        }
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
        var stream_options: StreamOptions?
    }

    private struct StreamOptions: Encodable { var include_usage = true }

    func requestBody(_ request: GenerationRequest, model: String, stream: Bool = false) throws -> Data {
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
        if stream {
            body.stream = true
            body.stream_options = StreamOptions()
        }
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

    // MARK: - Streaming

    /// Reads a server-sent-event response: `data: {chunk}` lines, each with a text delta, the last
    /// ones with `finish_reason` and (when the server honours `include_usage`) `usage`.
    private func stream(_ request: URLRequest, url: URL, chat: Bool, model: String, requestID: String,
                        started: ContinuousClock.Instant, onText: @escaping @Sendable (String) -> Void) async throws -> GenerationResult {
        let reader = EventStreamReader(chat: chat, onText: onText)
        let sessionConfiguration = URLSessionConfiguration.ephemeral
        let seconds = Self.seconds(configuration.requestTimeout)
        sessionConfiguration.timeoutIntervalForRequest = seconds
        sessionConfiguration.timeoutIntervalForResource = seconds
        // One session per streamed request: URLSession delegates are per session.
        let session = URLSession(configuration: sessionConfiguration, delegate: reader, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        let task = session.dataTask(with: request)
        let outcome: EventStreamReader.Outcome = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                reader.begin(continuation)
                task.resume()
            }
        } onCancel: {
            task.cancel()
        }
        let total = Self.milliseconds(ContinuousClock.now - started)
        if let error = outcome.error {
            if error.code == .cancelled || Task.isCancelled {
                return GenerationResult(text: outcome.text, promptTokens: outcome.promptTokens, completionTokens: outcome.completionTokens,
                                        finishReason: .cancelled, timings: GenerationTimings(totalMilliseconds: total), model: model)
            }
            throw Self.classify(error, url: url, timeout: configuration.requestTimeout)
        }
        guard (200..<300).contains(outcome.status) else {
            throw Self.classify(status: outcome.status, body: outcome.errorBody, url: url, model: model, requestID: requestID)
        }
        if let problem = outcome.malformed {
            throw InferenceError.backendError(status: 0, "\(url) streamed something that is not OpenAI JSON (\(problem))")
        }
        let firstToken = outcome.firstText.map { Self.milliseconds($0 - started) } ?? total
        return GenerationResult(
            text: outcome.text, promptTokens: outcome.promptTokens, completionTokens: outcome.completionTokens,
            finishReason: outcome.finishReason == "length" ? .length : .stop,
            timings: GenerationTimings(promptMilliseconds: 0, firstTokenMilliseconds: firstToken,
                                       decodeMilliseconds: total - firstToken, totalMilliseconds: total),
            model: outcome.model ?? model)
    }

    /// URLSession delegate that splits the event stream into lines and decodes each chunk.
    private final class EventStreamReader: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        // @unchecked: all state is behind `state`'s lock; `chat` and `onText` are immutable.
        struct Outcome: Sendable {
            var status = 0
            var text = ""
            var model: String?
            var finishReason: String?
            var promptTokens = 0
            var completionTokens = 0
            var firstText: ContinuousClock.Instant?
            var errorBody = Data()
            var malformed: String?
            var error: URLError?
        }

        private struct State: @unchecked Sendable { // the continuation is used once, under the lock
            var outcome = Outcome()
            var pending = Data()
            var continuation: CheckedContinuation<Outcome, any Error>?
        }

        private let chat: Bool
        private let onText: @Sendable (String) -> Void
        private let state = Mutex(State())

        init(chat: Bool, onText: @escaping @Sendable (String) -> Void) {
            self.chat = chat
            self.onText = onText
        }

        func begin(_ continuation: CheckedContinuation<Outcome, any Error>) {
            state.withLock { $0.continuation = continuation }
        }

        private struct Chunk: Decodable {
            struct Choice: Decodable {
                struct Delta: Decodable { var content: String? }
                var delta: Delta?
                var text: String?
                var finish_reason: String?
            }
            struct Usage: Decodable { var prompt_tokens: Int?; var completion_tokens: Int? }
            var model: String?
            var choices: [Choice]?
            var usage: Usage?
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void) {
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            state.withLock { $0.outcome.status = status }
            completionHandler(.allow)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            var pieces: [String] = []
            state.withLock { state in
                guard (200..<300).contains(state.outcome.status) else {
                    if state.outcome.errorBody.count < 4096 { state.outcome.errorBody.append(data) }
                    return
                }
                state.pending.append(data)
                while let newline = state.pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = state.pending[state.pending.startIndex..<newline]
                    state.pending.removeSubrange(state.pending.startIndex...newline)
                    if let piece = handle(line: line, outcome: &state.outcome) { pieces.append(piece) }
                }
            }
            for piece in pieces { onText(piece) }
        }

        /// One SSE line; returns the text it adds. Comments, `event:` lines and `[DONE]` add nothing.
        private func handle(line: Data, outcome: inout Outcome) -> String? {
            var text = String(decoding: line, as: UTF8.self)
            if text.hasSuffix("\r") { text.removeLast() }
            guard text.hasPrefix("data:") else { return nil }
            let payload = text.dropFirst(5).trimmingCharacters(in: .whitespaces)
            if payload == "[DONE]" || payload.isEmpty { return nil }
            guard let chunk = try? JSONDecoder().decode(Chunk.self, from: Data(payload.utf8)) else {
                if outcome.malformed == nil { outcome.malformed = String(payload.prefix(200)) }
                return nil
            }
            if let model = chunk.model { outcome.model = model }
            if let usage = chunk.usage {
                outcome.promptTokens = usage.prompt_tokens ?? outcome.promptTokens
                outcome.completionTokens = usage.completion_tokens ?? outcome.completionTokens
            }
            guard let choice = chunk.choices?.first else { return nil }
            if let reason = choice.finish_reason { outcome.finishReason = reason }
            let piece = (chat ? choice.delta?.content : choice.text) ?? ""
            guard !piece.isEmpty else { return nil }
            if outcome.firstText == nil { outcome.firstText = .now }
            outcome.text += piece
            return piece
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
            var last: String?
            let (continuation, outcome) = state.withLock { state -> (CheckedContinuation<Outcome, any Error>?, Outcome) in
                if let error {
                    state.outcome.error = (error as? URLError) ?? URLError(.unknown)
                } else if !state.pending.isEmpty, (200..<300).contains(state.outcome.status) {
                    // A last line without its newline.
                    last = handle(line: state.pending, outcome: &state.outcome)
                    state.pending.removeAll()
                }
                defer { state.continuation = nil }
                return (state.continuation, state.outcome)
            }
            if let last { onText(last) }
            continuation?.resume(returning: outcome)
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
