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
    /// A conversation the model's template refuses: with the template's own message where it
    /// raises one (`raise_exception`), else with what the template cannot read.
    case invalidConversation(String)

    public var description: String {
        switch self {
        case .unsupported(let why): "unsupported chat template: \(why) (supported: \(ChatTemplate.supported))"
        case .missing: "the model has no chat template"
        case .invalidConversation(let why): "the model's chat template refuses this conversation: \(why)"
        }
    }
}

/// The chat templates swift-lora renders. Models carry their template as Jinja source
/// (`tokenizer.chat_template`); rather than evaluate Jinja (code, in effect), the source is
/// recognised as one of the known templates and rendered natively, exactly as transformers'
/// `apply_chat_template` renders it (no tools, no extra variables, string contents). Anything
/// else is refused with a clear error — never guessed.
///
/// Render a conversation in two steps: `validate` refuses what the template itself refuses
/// (Gemma and Mistral raise on roles that do not alternate, for instance), then `render` or
/// `segments` give the text. For a conversation that `validate` refuses, the template gives no
/// text, so neither do they in any meaningful way: what they return then is unspecified.
public enum ChatTemplate: Sendable, Equatable, CustomStringConvertible {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per turn, `<|im_start|>assistant\n` as the
    /// generation prompt; if the first turn is not a system turn and the template has a default
    /// system prompt, that prompt is inserted first (SmolLM2 does this).
    case chatML(defaultSystemPrompt: String?)
    /// Meta-Llama-3-8B-Instruct: `<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>`
    /// per turn after `<|begin_of_text|>`. As released, the template appended the assistant header
    /// even without `add_generation_prompt` (`alwaysPromptsAssistant`); Meta's current one does not.
    case llama3(alwaysPromptsAssistant: Bool)
    /// Llama 3.1 and 3.3 Instruct: the Llama-3 turns after a system header that states the
    /// knowledge cutoff and the template's fixed date ("26 Jul 2024") before the system prompt;
    /// `tool` and `ipython` turns are written as `ipython` turns with their content as JSON.
    case llama31
    /// gemma-2-*-it: `<start_of_turn>{user|model}\n{content|trim}<end_of_turn>\n` after `<bos>`;
    /// refuses a system turn and roles that do not alternate user/assistant.
    case gemma2
    /// gemma-3-*-it: Gemma 2's turns, with a leading system turn folded into the first user turn
    /// (`{system}\n\n` before its content).
    case gemma3
    /// Mistral-7B-Instruct v0.1/v0.2 as released: `<s>[INST] {user} [/INST]{assistant}</s>…`, no
    /// system turn, roles alternating user/assistant.
    case mistral
    /// Mistral-Nemo-Instruct-2407: `<s>[INST]{user}[/INST]{assistant}</s>…`, a leading system turn
    /// put before the last turn's text when that turn is a user turn (and dropped otherwise).
    case mistralNemo

    /// What `ChatTemplateError.unsupported` lists as supported.
    static let supported = "ChatML with or without a default system prompt; Llama-3 (3.0, 3.1, 3.3 Instruct); "
        + "Gemma 2 and Gemma 3 instruction models; Mistral-7B-Instruct v0.1/v0.2 and Mistral-Nemo-Instruct-2407"

    /// Recognises Jinja source: it must be one of the known templates up to whitespace that
    /// Jinja ignores (inside `{% %}` / `{{ }}` tags, and around tags where the `-` markers,
    /// `trim_blocks` and `lstrip_blocks` remove it) and how string literals are quoted; text
    /// outside tags (which Jinja would print) makes the template unsupported.
    public init(jinja source: String) throws(ChatTemplateError) {
        let canonical = try Self.canonicalise(source)
        if let known = Self.known.first(where: { $0.canonical == canonical }) {
            self = known.template
        } else if let prompt = ChatMLTemplate.defaultSystemPrompt(canonical: canonical) {
            self = .chatML(defaultSystemPrompt: prompt)
        } else if source.contains("strftime_now") {
            throw .unsupported("the template writes today's date (strftime_now) into the prompt, so what it renders depends on the clock")
        } else {
            throw .unsupported("not a template this renderer knows")
        }
    }

    /// The known templates (exact sources as the models ship them), by canonical form.
    static let known: [(canonical: String, template: ChatTemplate)] = ([
        (ChatMLTemplate.plain, .chatML(defaultSystemPrompt: nil)),
        (Llama3Template.source, .llama3(alwaysPromptsAssistant: false)),
        (Llama3Template.releasedSource, .llama3(alwaysPromptsAssistant: true)),
        (Llama3Template.llama31Source, .llama31),
        (GemmaTemplate.gemma2Source, .gemma2),
        (GemmaTemplate.gemma3Source, .gemma3),
        (MistralTemplate.source, .mistral),
        (MistralTemplate.nemoSource, .mistralNemo),
    ] as [(String, ChatTemplate)]).map { source, template in
        // The sources are constants of this file's own; one that fails to canonicalise is a bug here.
        guard let canonical = try? canonicalise(source) else { fatalError("known chat template does not canonicalise: \(template)") }
        return (canonical, template)
    }

    /// The model family, for messages: "ChatML", "Llama-3", "Gemma" or "Mistral".
    public var family: String {
        switch self {
        case .chatML: "ChatML"
        case .llama3, .llama31: "Llama-3"
        case .gemma2, .gemma3: "Gemma"
        case .mistral, .mistralNemo: "Mistral"
        }
    }

    /// The text that ends an assistant turn (a special token of the family's tokenizers):
    /// generation stops at it, and training teaches the model to say it.
    public var endOfTurn: String {
        switch self {
        case .chatML: "<|im_end|>"
        case .llama3, .llama31: "<|eot_id|>"
        case .gemma2, .gemma3: "<end_of_turn>"
        case .mistral, .mistralNemo: MistralTemplate.eos
        }
    }

    public var description: String {
        switch self {
        case .chatML(let prompt): prompt == nil ? "ChatML" : "ChatML with a default system prompt"
        case .llama3(let always): always ? "Llama-3 (as released: always ends with the assistant header)" : "Llama-3"
        case .llama31: "Llama-3.1 (knowledge-cutoff system header)"
        case .gemma2: "Gemma 2"
        case .gemma3: "Gemma 3"
        case .mistral: "Mistral (Mistral-7B-Instruct v0.2)"
        case .mistralNemo: "Mistral Nemo"
        }
    }

    /// Throws what the model's template would raise for `messages` (with its message, verbatim,
    /// where it has one); a conversation that passes renders as the template renders it.
    public func validate(_ messages: [ChatMessage]) throws(ChatTemplateError) {
        switch self {
        case .chatML, .llama3: return
        case .llama31: try Self.requireFirstTurn(messages)
        case .gemma2: try GemmaTemplate.validate(messages, foldsSystem: false)
        case .gemma3: try GemmaTemplate.validate(messages, foldsSystem: true)
        case .mistral: try MistralTemplate.validate(messages)
        case .mistralNemo: try MistralTemplate.validateNemo(messages)
        }
    }

    /// The prompt text for `messages`, plus the assistant header when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        segments(messages).map(\.text).joined() + (addGenerationPrompt ? generationPrompt : "")
    }

    /// The rendered conversation as consecutive pieces, each marked trainable when it is what an
    /// assistant turn says (its content as the template prints it, and the `endOfTurn` that ends
    /// it) — the text a chat model is fine-tuned to produce. Concatenated, the pieces equal
    /// `render(messages, false)`.
    public func segments(_ messages: [ChatMessage]) -> [(text: String, trainable: Bool)] {
        switch self {
        case .chatML(let prompt): ChatMLTemplate.segments(messages, defaultSystemPrompt: prompt)
        case .llama3(let always): Llama3Template.segments(messages, alwaysPromptsAssistant: always)
        case .llama31: Llama3Template.llama31Segments(messages)
        case .gemma2: GemmaTemplate.segments(messages, foldsSystem: false)
        case .gemma3: GemmaTemplate.segments(messages, foldsSystem: true)
        case .mistral: MistralTemplate.segments(messages)
        case .mistralNemo: MistralTemplate.nemoSegments(messages)
        }
    }

    /// What `add_generation_prompt` appends (nothing for Mistral, whose `[/INST]` already
    /// prompts the assistant, nor for Llama-3 as released, which always appends its header).
    var generationPrompt: String {
        switch self {
        case .chatML: "<|im_start|>assistant\n"
        case .llama3(let always): always ? "" : Llama3Template.header("assistant")
        case .llama31: Llama3Template.header("assistant")
        case .gemma2, .gemma3: "<start_of_turn>model\n"
        case .mistral, .mistralNemo: ""
        }
    }

    /// Templates that read `messages[0]` fail (jinja2's UndefinedError) on an empty conversation.
    static func requireFirstTurn(_ messages: [ChatMessage]) throws(ChatTemplateError) {
        if messages.isEmpty { throw .invalidConversation("the template reads the first message, and there is none") }
    }

    /// Jinja's `trim` filter, Python's `str.strip()`: strips the code points `str.isspace()`
    /// accepts (which include U+001C…U+001F but not U+200B), one scalar at a time.
    static func trim(_ text: String) -> String {
        func isSpace(_ u: Unicode.Scalar) -> Bool {
            switch u.value {
            case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
            default: false
            }
        }
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }), let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    /// Tags with whitespace removed outside string literals (kept as one space only between two
    /// word characters, where it separates names), literals re-quoted with `'` and their escapes
    /// normalised, comments dropped — so that sources Jinja treats alike compare equal.
    static func canonicalise(_ source: String) throws(ChatTemplateError) -> String {
        let s = Array(source)
        func opensTag(_ i: Int) -> Bool { s[i] == "{" && i + 1 < s.count && (s[i + 1] == "%" || s[i + 1] == "{" || s[i + 1] == "#") }
        var out = ""
        var i = 0
        var previousTrimsRight = false
        var previousIsBlock = false
        while i < s.count {
            guard opensTag(i) else {
                let start = i
                while i < s.count, !opensTag(i) { i += 1 }
                let next: (trimsLeft: Bool, isBlock: Bool)? = i < s.count ? (i + 2 < s.count && s[i + 2] == "-", s[i + 1] != "{") : nil
                guard printsNothing(s[start..<i], atStart: start == 0, previousTrimsRight: previousTrimsRight,
                                    previousIsBlock: previousIsBlock, next: next) else {
                    throw .unsupported("literal text outside tags at offset \(start)")
                }
                continue
            }
            let opener = s[i + 1]
            i += 2
            if opener == "#" {
                while i + 1 < s.count, !(s[i] == "#" && s[i + 1] == "}") { i += 1 }
                guard i + 1 < s.count else { throw .unsupported("unterminated comment") }
                previousTrimsRight = s[i - 1] == "-"
                previousIsBlock = true
                i += 2
                continue
            }
            let close: Character = opener == "{" ? "}" : "%"
            var tag = "{" + String(opener)
            if i < s.count, s[i] == "-" { i += 1 }
            var space = false
            var closed = false
            previousTrimsRight = false
            while i < s.count {
                let c = s[i]
                if c == "'" || c == "\"" {
                    i += 1
                    var literal = ""
                    while i < s.count, s[i] != c {
                        if s[i] == "\\", i + 1 < s.count {
                            switch s[i + 1] {
                            case "n": literal.append("\n")
                            case "t": literal.append("\t")
                            case "\\", "'", "\"": literal.append(s[i + 1])
                            default: throw .unsupported("string escape \\\(s[i + 1])")
                            }
                            i += 2
                        } else {
                            literal.append(s[i])
                            i += 1
                        }
                    }
                    guard i < s.count else { throw .unsupported("unterminated string literal") }
                    i += 1
                    tag += "'" + literal.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'"
                    space = false
                } else if c == "-", i + 2 < s.count, s[i + 1] == close, s[i + 2] == "}" {
                    previousTrimsRight = true
                    i += 1
                } else if c == close, i + 1 < s.count, s[i + 1] == "}" {
                    tag += String(close) + "}"
                    i += 2
                    closed = true
                    break
                } else if c.isWhitespace {
                    space = true
                    i += 1
                } else {
                    if space, let last = tag.last, last.isWord, c.isWord { tag.append(" ") }
                    space = false
                    tag.append(c)
                    i += 1
                }
            }
            guard closed else { throw .unsupported("unterminated tag") }
            previousIsBlock = opener == "%"
            out += tag
        }
        return out
    }

    /// Whether Jinja (as transformers configures it: `trim_blocks`, `lstrip_blocks`, no kept
    /// trailing newline) prints none of `text`, which lies between two tags (`next` nil: at the end).
    static func printsNothing(_ text: ArraySlice<Character>, atStart: Bool, previousTrimsRight: Bool, previousIsBlock: Bool,
                              next: (trimsLeft: Bool, isBlock: Bool)?) -> Bool {
        var t = text
        var lineStart = atStart
        if previousTrimsRight {
            t = t.drop(while: \.isWhitespace)
        } else if previousIsBlock, t.first == "\n" {
            t = t.dropFirst()
            lineStart = true
        }
        if let next {
            if next.trimsLeft {
                while let last = t.last, last.isWhitespace { t = t.dropLast() }
            } else if next.isBlock {
                let indent = t.reversed().prefix(while: { $0 == " " || $0 == "\t" }).count
                let before = t.dropLast(indent)
                if before.isEmpty ? lineStart : before.last == "\n" { t = before }
            }
        } else if t.last == "\n" {
            t = t.dropLast()
        }
        return t.isEmpty
    }
}

extension Character {
    fileprivate var isWord: Bool { self == "_" || (isASCII && (isLetter || isNumber)) }
}

extension String {
    /// Every occurrence of `target` replaced (Foundation-free `replacingOccurrences`).
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
