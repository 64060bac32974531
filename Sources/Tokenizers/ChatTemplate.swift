/// One turn of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    case unsupported(String)
    case missing

    public var description: String {
        switch self {
        case .unsupported(let why): "unsupported chat template: \(why) (supported: ChatML, with or without a default system prompt)"
        case .missing: "the model has no chat template"
        }
    }
}

/// The chat templates swift-lora renders. Models carry their template as Jinja source
/// (`tokenizer.chat_template`); rather than evaluate Jinja (code, in effect), the source is
/// recognised as one of the known families and rendered natively. Anything else is refused
/// with a clear error — never guessed.
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per turn, `<|im_start|>assistant\n` as the
    /// generation prompt; if the first turn is not a system turn and the template has a default
    /// system prompt, that prompt is inserted first (SmolLM2 does this).
    case chatML(defaultSystemPrompt: String?)

    /// Recognises Jinja source. Whitespace inside `{% %}` / `{{ }}` tags is irrelevant; text
    /// outside tags (which Jinja would print) makes the template unsupported.
    public init(jinja source: String) throws(ChatTemplateError) {
        let canonical = try Self.canonicalise(source)
        let turn = "{{'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'}}"
        let generation = "{%ifadd_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%}"
        let plain = "{%formessageinmessages%}" + turn + "{%endfor%}" + generation
        if canonical == plain {
            self = .chatML(defaultSystemPrompt: nil)
            return
        }
        let head = "{%formessageinmessages%}{%ifloop.firstandmessages[0]['role']!='system'%}{{'<|im_start|>system\n"
        let tail = "<|im_end|>\n'}}{%endif%}" + turn + "{%endfor%}" + generation
        if canonical.hasPrefix(head), canonical.hasSuffix(tail), canonical.count > head.count + tail.count {
            let prompt = String(canonical.dropFirst(head.count).dropLast(tail.count))
            if !prompt.contains("'") {
                self = .chatML(defaultSystemPrompt: prompt)
                return
            }
        }
        throw .unsupported("not a ChatML template this renderer knows")
    }

    /// The prompt text for `messages`, plus the assistant header when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        switch self {
        case .chatML(let defaultSystemPrompt):
            var out = ""
            if let prompt = defaultSystemPrompt, let first = messages.first, first.role != "system" {
                out += "<|im_start|>system\n\(prompt)<|im_end|>\n"
            }
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
            return out
        }
    }

    /// The rendered conversation as consecutive pieces, each marked trainable when it is what an
    /// assistant turn says (its content and the `<|im_end|>` that ends it) — the text a chat model
    /// is fine-tuned to produce. Concatenated, the pieces equal `render(messages, false)`.
    public func segments(_ messages: [ChatMessage]) -> [(text: String, trainable: Bool)] {
        switch self {
        case .chatML(let defaultSystemPrompt):
            var out: [(text: String, trainable: Bool)] = []
            if let prompt = defaultSystemPrompt, let first = messages.first, first.role != "system" {
                out.append(("<|im_start|>system\n\(prompt)<|im_end|>\n", false))
            }
            for m in messages {
                let isAssistant = m.role == "assistant"
                out.append(("<|im_start|>\(m.role)\n", false))
                out.append((m.content + "<|im_end|>", isAssistant))
                out.append(("\n", false))
            }
            return out
        }
    }

    /// Tags with whitespace removed outside string literals and literals re-quoted with their
    /// escapes decoded, so that equivalent sources compare equal.
    static func canonicalise(_ source: String) throws(ChatTemplateError) -> String {
        let s = Array(source)
        var out = ""
        var i = 0
        var previousTrimsRight = false
        while i < s.count {
            guard s[i] == "{", i + 1 < s.count, s[i + 1] == "%" || s[i + 1] == "{" || s[i + 1] == "#" else {
                // Jinja prints text between tags; only whitespace that a `-` marker trims is allowed.
                let start = i
                while i < s.count, s[i].isWhitespace { i += 1 }
                let nextTrimsLeft = i + 2 < s.count && s[i] == "{" && s[i + 2] == "-"
                guard i > start, previousTrimsRight || nextTrimsLeft else {
                    throw .unsupported("literal text outside tags at offset \(start)")
                }
                continue
            }
            let close: Character = s[i + 1] == "{" ? "}" : s[i + 1]
            let isComment = s[i + 1] == "#"
            var tag = "{" + String(s[i + 1])
            i += 2
            var closed = false
            while i < s.count {
                if s[i] == "'" || s[i] == "\"" {
                    let quote = s[i]
                    var literal = ""
                    i += 1
                    while i < s.count, s[i] != quote {
                        if s[i] == "\\", i + 1 < s.count {
                            let next = s[i + 1]
                            literal.append(next == "n" ? "\n" : next == "t" ? "\t" : next)
                            i += 2
                        } else {
                            literal.append(s[i])
                            i += 1
                        }
                    }
                    guard i < s.count else { throw .unsupported("unterminated string literal") }
                    i += 1
                    tag += "'" + literal + "'"
                } else if s[i] == close, i + 1 < s.count, s[i + 1] == "}" {
                    tag += String(close) + "}"
                    previousTrimsRight = s[i - 1] == "-"
                    i += 2
                    closed = true
                    break
                } else {
                    if !s[i].isWhitespace && !(s[i] == "-" && (tag.count == 2 || (i + 1 < s.count && s[i + 1] == close))) {
                        tag.append(s[i])
                    }
                    i += 1
                }
            }
            guard closed else { throw .unsupported("unterminated tag") }
            if !isComment { out += tag }
        }
        return out
    }
}
