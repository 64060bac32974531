/// The Mistral templates: `[INST]…[/INST]` around user turns after `<s>`, assistant turns ended
/// by `</s>` (the bos_token and eos_token of every Mistral tokenizer).
enum MistralTemplate {
    static let bos = "<s>"
    static let eos = "</s>"

    /// mistralai/Mistral-7B-Instruct-v0.2 as released (v0.1's is the same), quoted in llama.cpp's
    /// tests/test-chat-template.cpp ("Old pre-v1 without a system prompt").
    static let source = #"""
{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}
"""#

    /// llama.cpp's models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja. Without tools, and
    /// with messages that carry no `tool_calls`, it takes none of its tool branches but one: a
    /// `tool` or `tool_results` turn, which it refuses for want of a `tool_call_id`.
    static let nemoSource = #"""
{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS][" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST]" + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST]" + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif (message.tool_calls is defined and message.tool_calls is not none) %}
        {{- "[TOOL_CALLS][" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- message["content"] + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS]{"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}

"""#

    /// Turn by turn: user at even positions, assistant at odd ones, nothing else.
    static func validate(_ messages: [ChatMessage]) throws(ChatTemplateError) {
        for (i, m) in messages.enumerated() {
            if (m.role == "user") != (i % 2 == 0) {
                throw .invalidConversation("Conversation roles must alternate user/assistant/user/assistant/...")
            }
            if m.role != "user", m.role != "assistant" { throw .invalidConversation("Only user and assistant roles are supported!") }
        }
    }

    static func segments(_ messages: [ChatMessage]) -> [(text: String, trainable: Bool)] {
        var out: [(text: String, trainable: Bool)] = [(bos, false)]
        for m in messages {
            if m.role == "user" {
                out.append(("[INST] " + m.content + " [/INST]", false))
            } else if m.role == "assistant" {
                out.append((m.content + eos, true))
            }
        }
        return out
    }

    /// After a leading system turn, first a pass over the turns that are not tool turns (user at
    /// even positions among them), then turn by turn: tool turns raise, so does any role but user
    /// and assistant.
    static func validateNemo(_ messages: [ChatMessage]) throws(ChatTemplateError) {
        try ChatTemplate.requireFirstTurn(messages)
        let turns = messages[0].role == "system" ? messages.dropFirst() : messages[...]
        let isTool = { (m: ChatMessage) in m.role == "tool" || m.role == "tool_results" }
        for (i, m) in turns.filter({ !isTool($0) }).enumerated() where (m.role == "user") != (i % 2 == 0) {
            throw .invalidConversation("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...")
        }
        for m in turns where m.role != "user" && m.role != "assistant" {
            throw .invalidConversation(isTool(m) ? "Tool call IDs should be alphanumeric strings with length 9!"
                : "Only user and assistant roles are supported, with the exception of an initial optional system message!")
        }
    }

    static func nemoSegments(_ messages: [ChatMessage]) -> [(text: String, trainable: Bool)] {
        var turns = messages[...]
        var system: String?
        if let first = turns.first, first.role == "system" {
            system = first.content
            turns = turns.dropFirst()
        }
        var out: [(text: String, trainable: Bool)] = [(bos, false)]
        for (i, m) in zip(turns.indices, turns) {
            if m.role == "user" {
                let text = i == turns.indices.last ? system.map { $0 + "\n\n" + m.content } ?? m.content : m.content
                out.append(("[INST]" + text + "[/INST]", false))
            } else if m.role == "assistant" {
                out.append((m.content + eos, true))
            }
        }
        return out
    }
}
