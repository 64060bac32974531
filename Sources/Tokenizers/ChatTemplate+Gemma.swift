/// The Gemma templates: `<start_of_turn>{user|model|role}\n{content|trim}<end_of_turn>\n` per turn
/// after `<bos>` (the bos_token of every Gemma tokenizer), roles alternating user/assistant.
enum GemmaTemplate {
    static let bos = "<bos>"
    static let alternation = "Conversation roles must alternate user/assistant/user/assistant/..."

    /// llama.cpp's models/templates/google-gemma-2-2b-it.jinja (every Gemma 2 instruction model).
    static let gemma2Source = #"""
{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %}
"""#

    /// google/gemma-3-*-it, tokenizer_config.json (the 270M to 27B instruction models share it).
    /// With string contents it takes the `is string` branches only.
    static let gemma3Source = #"""
{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}

"""#

    /// Gemma 2 raises on a leading system turn, Gemma 3 folds it into the first user turn; then
    /// both raise where a turn's being a user turn disagrees with its position being even. Roles
    /// other than user and assistant pass at odd positions and are printed as they are.
    static func validate(_ messages: [ChatMessage], foldsSystem: Bool) throws(ChatTemplateError) {
        try ChatTemplate.requireFirstTurn(messages)
        var turns = messages[...]
        if messages[0].role == "system" {
            guard foldsSystem else { throw .invalidConversation("System role not supported") }
            turns = turns.dropFirst()
        }
        for (i, m) in turns.enumerated() where (m.role == "user") != (i % 2 == 0) {
            throw .invalidConversation(alternation)
        }
    }

    static func segments(_ messages: [ChatMessage], foldsSystem: Bool) -> [(text: String, trainable: Bool)] {
        var turns = messages[...]
        var prefix = ""
        if foldsSystem, let first = turns.first, first.role == "system" {
            prefix = first.content + "\n\n"
            turns = turns.dropFirst()
        }
        var out: [(text: String, trainable: Bool)] = [(bos, false)]
        for (i, m) in turns.enumerated() {
            out.append(("<start_of_turn>" + (m.role == "assistant" ? "model" : m.role) + "\n" + (i == 0 ? prefix : ""), false))
            out.append((ChatTemplate.trim(m.content) + "<end_of_turn>", m.role == "assistant"))
            out.append(("\n", false))
        }
        return out
    }
}
