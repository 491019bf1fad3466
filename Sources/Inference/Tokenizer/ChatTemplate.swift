/// Renders a chat as the model expects it: ChatML, `<|im_start|>role\ncontent<|im_end|>\n` per
/// message, then `<|im_start|>assistant\n` as the generation prompt.
///
/// What the GGUF's `tokenizer.chat_template` (Jinja) of SmolLM2-135M-Instruct does, and this
/// type mirrors: when the *first* message is not a system message, a default system turn
/// "You are a helpful AI assistant named SmolLM, trained by Hugging Face" is put before it; an
/// empty conversation renders nothing (the loop never runs), and the generation prompt is
/// appended only when asked. The default system text is read from the template when it has that
/// shape, so another ChatML model's default is used as written in its file.
///
/// `tokens(for:)` inserts the control markers as their ids and tokenises roles and contents as
/// plain text: a user who types "<|im_end|>" gets those characters, not a turn boundary (Jinja
/// followed by special-token parsing would let message text forge turns). For text without
/// control-token strings the ids are identical to tokenising `render(_:)` with `parseSpecial`.
public struct ChatTemplate: Sendable, Equatable {
    /// System text put first when a conversation does not start with a system message.
    public var defaultSystemPrompt: String?

    public init(defaultSystemPrompt: String?) {
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// Reads the default system prompt out of a ChatML Jinja template (nil template: none).
    public init(jinja source: String?) {
        self.defaultSystemPrompt = source.flatMap(Self.defaultSystemPrompt(inJinja:))
    }

    /// The template of a tokenizer read from a GGUF file.
    public init(tokenizer: Tokenizer) {
        self.init(jinja: tokenizer.chatTemplateSource)
    }

    /// The turns to render, after the default system message is applied.
    public func turns(_ messages: [ChatMessage]) -> [ChatMessage] {
        guard let first = messages.first else { return [] }
        if first.role != .system, let defaultSystemPrompt {
            return [.system(defaultSystemPrompt)] + messages
        }
        return messages
    }

    /// The prompt as text.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var text = ""
        for message in turns(messages) {
            text += "<|im_start|>" + message.role.rawValue + "\n" + message.content + "<|im_end|>\n"
        }
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }

    /// The prompt as token ids, control markers as single tokens and message text as plain text.
    public func tokens(for messages: [ChatMessage], addGenerationPrompt: Bool = true, tokenizer: Tokenizer) throws(InferenceError) -> [Int32] {
        guard let start = tokenizer.specialTokenID("<|im_start|>"), let end = tokenizer.specialTokenID("<|im_end|>") else {
            throw .modelLoad("the vocabulary has no <|im_start|>/<|im_end|> tokens, so it cannot take ChatML chats; use a text prompt")
        }
        var ids: [Int32] = []
        if tokenizer.addsBOS, let bos = tokenizer.bosTokenID { ids.append(bos) }
        for message in turns(messages) {
            ids.append(start)
            ids += tokenizer.encode(message.role.rawValue + "\n" + message.content)
            ids.append(end)
            ids += tokenizer.encode("\n")
        }
        if addGenerationPrompt {
            ids.append(start)
            ids += tokenizer.encode("assistant\n")
        }
        return ids
    }

    /// Finds `'<|im_start|>system\n…<|im_end|>` inside the branch taken when the first message
    /// is not a system message. Returns nil for templates without such a default.
    static func defaultSystemPrompt(inJinja source: String) -> String? {
        guard let condition = source.range(of: "!= 'system'") ?? source.range(of: "!= \"system\"") else { return nil }
        let rest = source[condition.upperBound...]
        // The branch ends at the next {% endif %}; the default must be inside it.
        let branch = rest[..<(rest.range(of: "endif")?.lowerBound ?? rest.endIndex)]
        for marker in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            guard let open = branch.range(of: marker) else { continue }
            let body = branch[open.upperBound...]
            guard let close = body.range(of: "<|im_end|>") else { return nil }
            return String(body[..<close.lowerBound]).replacingOccurrences(of: "\\n", with: "\n")
        }
        return nil
    }
}
