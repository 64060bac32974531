/// ChatML (`<|im_start|>{role}\n{content}<|im_end|>\n`), as SmolLM2 and many others ship it.
enum ChatMLTemplate {
    static let plain = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

    /// SmolLM2's template, with U+0001 where its default system prompt stands: canonicalised, the
    /// text on either side of it.
    static let withDefaultPrompt: (head: String, tail: String) = {
        let source = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            + "{{ '<|im_start|>system\n\u{1}<|im_end|>\n' }}{% endif %}" + plain.dropFirst("{% for message in messages %}".count)
        guard let canonical = try? ChatTemplate.canonicalise(source), let marker = canonical.firstIndex(of: "\u{1}") else {
            fatalError("the ChatML template with a default system prompt does not canonicalise")
        }
        return (String(canonical[..<marker]), String(canonical[canonical.index(after: marker)...]))
    }()

    /// The default system prompt of a canonical ChatML template that inserts one, or nil when
    /// `canonical` is not such a template.
    static func defaultSystemPrompt(canonical: String) -> String? {
        let (head, tail) = withDefaultPrompt
        guard canonical.hasPrefix(head), canonical.hasSuffix(tail), canonical.count > head.count + tail.count else { return nil }
        // The prompt as the canonical literal holds it: `\` and `'` escaped; a bare `'` would end
        // the literal, so the template is something else.
        var prompt = ""
        var escaped = false
        for c in canonical.dropFirst(head.count).dropLast(tail.count) {
            if escaped {
                prompt.append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "'" {
                return nil
            } else {
                prompt.append(c)
            }
        }
        return escaped ? nil : prompt
    }

    static func segments(_ messages: [ChatMessage], defaultSystemPrompt: String?) -> [(text: String, trainable: Bool)] {
        var out: [(text: String, trainable: Bool)] = []
        if let prompt = defaultSystemPrompt, let first = messages.first, first.role != "system" {
            out.append(("<|im_start|>system\n\(prompt)<|im_end|>\n", false))
        }
        for m in messages {
            out.append(("<|im_start|>\(m.role)\n", false))
            out.append((m.content + "<|im_end|>", m.role == "assistant"))
            out.append(("\n", false))
        }
        return out
    }
}
