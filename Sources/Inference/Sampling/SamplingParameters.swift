/// How to pick each next token. The defaults give varied but sane text; `temperature: 0` is
/// greedy decoding (always the most likely token, deterministic without a seed).
public struct SamplingParameters: Codable, Sendable, Equatable, Hashable {
    /// Most tokens to generate (at least 1).
    public var maxTokens: Int
    /// Softmax temperature; 0 means greedy. Finite, 0...100.
    public var temperature: Float
    /// Keep only the `topK` most likely tokens; 0 turns the filter off.
    public var topK: Int
    /// Keep the smallest set of likely tokens whose probability adds up to `topP` (0 < topP ≤ 1;
    /// 1 turns the filter off). Applied after top-k, over the renormalised top-k probabilities.
    public var topP: Float
    /// Divides positive logits (multiplies negative ones) of tokens seen in the recent history;
    /// 1 turns it off. Must be > 0.
    public var repetitionPenalty: Float
    /// How many of the most recent tokens (prompt and generated) the repetition penalty looks at.
    public var repetitionWindow: Int
    /// Seed of the random generator; the same seed and inputs reproduce a run bit for bit.
    /// `nil` draws a fresh seed per run.
    public var seed: UInt64?
    /// Generation stops before any of these strings; they are not part of the result.
    public var stop: [String]

    public init(maxTokens: Int = 256, temperature: Float = 0.7, topK: Int = 40, topP: Float = 0.95,
                repetitionPenalty: Float = 1.0, repetitionWindow: Int = 64, seed: UInt64? = nil, stop: [String] = []) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
        self.repetitionWindow = repetitionWindow
        self.seed = seed
        self.stop = stop
    }

    /// Greedy decoding: the most likely token every time.
    public static func greedy(maxTokens: Int = 256, stop: [String] = []) -> SamplingParameters {
        SamplingParameters(maxTokens: maxTokens, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: stop)
    }

    /// Largest accepted `maxTokens`; more than any context this project runs.
    public static let maxTokensLimit = 1 << 20
    /// Most stop strings accepted (each is checked against every generated piece).
    public static let stopStringsLimit = 16

    /// Checks every value and throws `InferenceError.invalidRequest` naming the first bad one.
    public func validate() throws(InferenceError) {
        func bad(_ message: String) -> InferenceError { .invalidRequest(message) }
        guard maxTokens >= 1, maxTokens <= Self.maxTokensLimit else {
            throw bad("max_tokens must be between 1 and \(Self.maxTokensLimit), got \(maxTokens)")
        }
        guard temperature.isFinite, temperature >= 0, temperature <= 100 else {
            throw bad("temperature must be a number from 0 (greedy) to 100, got \(temperature)")
        }
        guard topK >= 0 else { throw bad("top_k must be 0 (off) or positive, got \(topK)") }
        guard topP.isFinite, topP > 0, topP <= 1 else {
            throw bad("top_p must be greater than 0 and at most 1, got \(topP)")
        }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw bad("repetition_penalty must be a positive number (1 = off), got \(repetitionPenalty)")
        }
        guard repetitionWindow >= 0 else {
            throw bad("repetition_window must be 0 or positive, got \(repetitionWindow)")
        }
        guard stop.count <= Self.stopStringsLimit else {
            throw bad("at most \(Self.stopStringsLimit) stop strings are accepted, got \(stop.count)")
        }
        if stop.contains(where: \.isEmpty) { throw bad("stop strings must not be empty") }
    }

    private enum CodingKeys: String, CodingKey {
        case maxTokens = "max_tokens"
        case temperature
        case topK = "top_k"
        case topP = "top_p"
        case repetitionPenalty = "repetition_penalty"
        case repetitionWindow = "repetition_window"
        case seed
        case stop
    }

    /// Missing keys take their defaults, so `{"max_tokens": 32}` is a complete value.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SamplingParameters()
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens) ?? d.maxTokens
        temperature = try c.decodeIfPresent(Float.self, forKey: .temperature) ?? d.temperature
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? d.topK
        topP = try c.decodeIfPresent(Float.self, forKey: .topP) ?? d.topP
        repetitionPenalty = try c.decodeIfPresent(Float.self, forKey: .repetitionPenalty) ?? d.repetitionPenalty
        repetitionWindow = try c.decodeIfPresent(Int.self, forKey: .repetitionWindow) ?? d.repetitionWindow
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        stop = try c.decodeIfPresent([String].self, forKey: .stop) ?? d.stop
    }
}
