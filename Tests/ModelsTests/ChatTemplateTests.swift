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
}
