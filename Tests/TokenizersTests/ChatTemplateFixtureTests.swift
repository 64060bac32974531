import Foundation
import TestSupport
import Testing
@testable import Tokenizers

/// Real chat templates (llama.cpp's models/templates, the templates its tests quote, and the
/// models' tokenizer_config.json) against transformers' `render_jinja_template`, the renderer of
/// `apply_chat_template` (Scripts/reference/make_chat_template_fixtures.py).
@Suite("Chat template fixtures")
struct ChatTemplateFixtureTests {
    struct Fixture: Decodable {
        struct Template: Decodable {
            let name: String
            let source: String
            let cases: [Case]
        }
        struct Case: Decodable {
            let messages: [ChatMessage]
            let add_generation_prompt: Bool
            let expected: String?
            let assistant_texts: [String]?
            let error: String?
            let error_kind: String?
        }
        struct Refused: Decodable { let name: String; let source: String; let why: String }
        let family: String
        let templates: [Template]
        let refused: [Refused]
    }

    static let families = ["chatml", "llama-3", "gemma", "mistral"]

    static func load(_ family: String) throws -> Fixture {
        let url = fixturesDirectory.appendingPathComponent("chat-templates/\(family).json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    @Test(arguments: families) func rendersAsTransformersDoes(family: String) throws {
        let fixture = try Self.load(family)
        var rendered = 0, identical = 0, refused = 0
        for t in fixture.templates {
            let template = try ChatTemplate(jinja: t.source)
            #expect(template.family == fixture.family, "\(t.name)")
            for c in t.cases {
                let context = "\(t.name): \(c.messages.map(\.role)) add_generation_prompt=\(c.add_generation_prompt)"
                if let expected = c.expected {
                    #expect(throws: Never.self, "\(context)") { try template.validate(c.messages) }
                    let text = template.render(c.messages, addGenerationPrompt: c.add_generation_prompt)
                    if Array(text.utf8) == Array(expected.utf8) { identical += 1 }
                    #expect(Array(text.utf8) == Array(expected.utf8), "\(context)\n  got      \(text.debugDescription)\n  expected \(expected.debugDescription)")
                    let pieces = template.segments(c.messages)
                    #expect(pieces.map(\.text).joined() == template.render(c.messages, addGenerationPrompt: false), "\(context)")
                    let trainable = pieces.filter(\.trainable).map(\.text).joined()
                    #expect(trainable == (c.assistant_texts ?? []).map { $0 + template.endOfTurn }.joined(), "\(context)")
                    rendered += 1
                } else {
                    let error = try #require(c.error, "\(context): a case with neither expected text nor error")
                    // The template's own message, verbatim; jinja2's errors (an empty conversation) in our words.
                    do {
                        try template.validate(c.messages)
                        Issue.record("\(context): accepted, but the template raises \(error)")
                    } catch {
                        if c.error_kind == "raise_exception" { #expect(error == .invalidConversation(c.error ?? ""), "\(context)") }
                        refused += 1
                    }
                }
            }
        }
        for r in fixture.refused {
            #expect(throws: ChatTemplateError.self, "\(r.name) (\(r.why))") { try ChatTemplate(jinja: r.source) }
        }
        print("\(fixture.family): \(fixture.templates.count) templates; \(identical) of \(rendered) renderings identical to transformers' byte for byte; "
            + "\(refused) conversations refused as the template refuses them; \(fixture.refused.count) templates refused")
    }

    /// The templates this renderer knows are told apart: each fixture source is recognised as
    /// exactly one variant, and the variants map to their end-of-turn markers.
    @Test func eachSourceIsRecognisedAsItsVariant() throws {
        var seen: [String: ChatTemplate] = [:]
        for family in Self.families {
            for t in try Self.load(family).templates { seen[t.name] = try ChatTemplate(jinja: t.source) }
        }
        let expected: [String: ChatTemplate] = [
            "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF tokenizer.chat_template)":
                .chatML(defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
            "meta-llama/Meta-Llama-3-8B-Instruct (tokenizer_config.json)": .llama3(alwaysPromptsAssistant: false),
            "tests/test-chat-template.cpp: Llama-3 (Meta-Llama-3-8B-Instruct as released)": .llama3(alwaysPromptsAssistant: true),
            "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja": .llama31,
            "models/templates/meta-llama-Llama-3.3-70B-Instruct.jinja": .llama31,
            "models/templates/google-gemma-2-2b-it.jinja": .gemma2,
            "google/gemma-3-270m-it (tokenizer_config.json; every Gemma 3 instruction model)": .gemma3,
            "tests/test-chat-template.cpp: mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)": .mistral,
            "models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja": .mistralNemo,
        ]
        #expect(seen == expected)
        #expect(ChatTemplate.llama31.endOfTurn == "<|eot_id|>")
        #expect(ChatTemplate.gemma3.endOfTurn == "<end_of_turn>")
        #expect(ChatTemplate.mistralNemo.endOfTurn == "</s>")
        #expect(ChatTemplate.chatML(defaultSystemPrompt: nil).endOfTurn == "<|im_end|>")
    }

    /// Templates that read the clock are refused by name of the reason; a near miss of a known
    /// template (one literal changed) is refused as unknown.
    @Test func nearMissesAndClockDependentTemplatesAreRefused() throws {
        let llama = try Self.load("llama-3")
        let llama32 = try #require(llama.refused.first { $0.name.contains("Llama-3.2") })
        #expect {
            try ChatTemplate(jinja: llama32.source)
        } throws: { error in
            "\(error)".contains("strftime_now") && "\(error)".contains("Gemma 2")
        }
        let llama31 = try #require(llama.templates.first { $0.name.contains("Llama-3.1") }).source
        let variants = [
            llama31.replacingOccurrences(of: "26 Jul 2024", with: "27 Jul 2024"),
            llama31.replacingOccurrences(of: "message['content'] | trim", with: "message['content']"),
            llama31 + "x",
        ]
        for source in variants {
            #expect(throws: ChatTemplateError.self) { try ChatTemplate(jinja: source) }
        }
        // What transformers' Jinja settings drop is irrelevant: the trailing newline, a newline
        // after a block tag (trim_blocks), the indentation before one (lstrip_blocks), and so
        // are the `-` markers where they strip nothing.
        let gemma2 = try #require(try Self.load("gemma").templates.first).source
        let reflowed = gemma2.replacingOccurrences(of: "{% for message in messages %}", with: "\n  {% for message in messages %}\n")
        #expect(try ChatTemplate(jinja: reflowed + "\n") == .gemma2)
        #expect(try ChatTemplate(jinja: llama31.replacingOccurrences(of: "{%- if add_generation_prompt %}", with: "{% if add_generation_prompt %}")) == .llama31)
        // ... but whitespace Jinja prints is text, and so is refused.
        #expect(throws: ChatTemplateError.self) {
            try ChatTemplate(jinja: gemma2.replacingOccurrences(of: "{% for message in messages %}", with: "{% for message in messages %} "))
        }
        #expect(throws: ChatTemplateError.self) {
            try ChatTemplate(jinja: gemma2.replacingOccurrences(of: "}}{% endif %}", with: "}}\n{% endif %}"))
        }
    }

    /// Canonical forms keep what tells programs apart: a space between two names, and quotes
    /// inside a literal.
    @Test func canonicalFormsDoNotMergeDistinctPrograms() throws {
        #expect(try ChatTemplate.canonicalise("{% if not tools is defined %}") != ChatTemplate.canonicalise("{% if nottools is defined %}"))
        #expect(try ChatTemplate.canonicalise("{{ 'a' + 'b' }}") != ChatTemplate.canonicalise("{{ \"a'+'b\" }}"))
        #expect(try ChatTemplate.canonicalise("{{ \"it's\" }}") == ChatTemplate.canonicalise("{{ 'it\\'s' }}"))
        #expect(throws: ChatTemplateError.self) { try ChatTemplate.canonicalise("{{ '\\x41' }}") }
    }

    /// A default system prompt with quotes and backslashes is extracted as Jinja reads it.
    @Test func chatMLDefaultPromptIsUnescaped() throws {
        let source = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            + "{{ '<|im_start|>system\\nYou\\'re \"kind\" \\\\ ok<|im_end|>\\n' }}{% endif %}"
            + "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        #expect(try ChatTemplate(jinja: source) == .chatML(defaultSystemPrompt: "You're \"kind\" \\ ok"))
    }
}
