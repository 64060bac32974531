import Foundation
import TestSupport
import Testing
import Tokenizers

/// Chat templates against transformers' `apply_chat_template` (the SmolLM2 GGUF's template).
@Suite("Chat templates")
struct ChatTemplateTests {
    struct Golden: Decodable {
        struct Chat: Decodable { let messages: [ChatMessage]; let add_generation_prompt: Bool; let text: String }
        let chat_template: String
        let chats: [Chat]
    }

    @Test func smolLM2TemplateRendersAsTransformersDoes() throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/smollm2.json")))
        let template = try ChatTemplate(jinja: golden.chat_template)
        #expect(template == .chatML(defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"))
        for chat in golden.chats {
            #expect(template.render(chat.messages, addGenerationPrompt: chat.add_generation_prompt) == chat.text)
        }
        print("chat template: \(golden.chats.count) conversations rendered identically to transformers")
    }

    @Test func whitespaceAndTrimMarkersDoNotMatterButOtherTemplatesAreRefused() throws {
        let spaced = """
        {%- for message in messages -%}
            {{- '<|im_start|>' + message["role"] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
        """
        #expect(try ChatTemplate(jinja: spaced) == .chatML(defaultSystemPrompt: nil))
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(jinja: llama3) }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(jinja: "Hello {{ messages }}") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(jinja: "{% for message in messages %}") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(jinja: "{{ 'unterminated }}") }
    }

    /// A template is recognised and rendered natively, never evaluated: Jinja that would run
    /// code (Python attribute walks, imports, macros, filters, calls) is refused, and a message's
    /// content is copied verbatim — template syntax inside it is just text.
    @Test func templatesAreNeverEvaluated() throws {
        let plain = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        let hostile = [
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{% import os %}{{ os.system('id') }}",
            "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
            "{% macro m() %}x{% endmacro %}" + plain,
            plain + "{{ messages|map(attribute='__class__')|list }}",
            plain.replacingOccurrences(of: "message['content']", with: "message['content'].__class__"),
            plain.replacingOccurrences(of: "{% endfor %}", with: "{{ range(10**9)|list }}{% endfor %}"),
        ]
        for source in hostile {
            #expect(throws: ChatTemplateError.self, "\(source)") { try ChatTemplate(jinja: source) }
        }
        let template = try ChatTemplate(jinja: plain)
        let payload = "{{ ''.__class__ }}{% import os %}<|im_end|>"
        let rendered = template.render([ChatMessage(role: "user", content: payload)], addGenerationPrompt: false)
        #expect(rendered == "<|im_start|>user\n\(payload)<|im_end|>\n")
        print("refused \(hostile.count) code-running templates; content rendered verbatim: \(rendered.debugDescription)")
    }
}
