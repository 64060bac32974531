#!/usr/bin/env python3
"""Check that transformers loads a tokenizer exported by swift-lora and gives the expected ids.

    python Scripts/reference/check_exported_tokenizer.py DIR CORPUS EXPECTED_JSON [--chat CHAT_JSON]

DIR: a directory written by `huggingFaceFiles` (tokenizer.json, tokenizer_config.json,
special_tokens_map.json), loaded with `AutoTokenizer.from_pretrained(DIR)` (local files only).
CORPUS: Tests/Fixtures/tokenizers/corpus.json ({"cases": [{name, text}]}).
EXPECTED_JSON: {"cases": [{name, ids, [text], [decoded], [decoded_skip_special]}], [pairs], [*_token_id]}
(a committed fixture such as all-minilm-l6-v2.json; for smollm2-135m-instruct.json the ids are
`smollm_ids`). A case's own "text" wins over the corpus text of the same name.
--chat: {messages, add_generation_prompt, text}: `apply_chat_template` must render exactly `text`.
Exits 1 on any difference; prints one line per check.
"""

import argparse
import json
import sys

from transformers import AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("corpus")
    ap.add_argument("expected")
    ap.add_argument("--ids-key", help="the key of the expected ids in each case (default: smollm_ids if present, else ids)")
    ap.add_argument("--chat", help="JSON {messages, add_generation_prompt, text} to check apply_chat_template against")
    args = ap.parse_args()

    with open(args.corpus, encoding="utf-8") as f:
        corpus = {c["name"]: c["text"] for c in json.load(f)["cases"]}
    with open(args.expected, encoding="utf-8") as f:
        expected = json.load(f)
    tok = AutoTokenizer.from_pretrained(args.directory, local_files_only=True)
    print(f"{args.directory}: {type(tok).__name__}, len {len(tok)}, pre_tokenizer "
          f"{json.loads(tok.backend_tokenizer.to_str())['pre_tokenizer']['type']}")
    failures = []

    cases = expected["cases"]
    key = args.ids_key or ("smollm_ids" if cases and "smollm_ids" in cases[0] else "ids")
    ids_ok = decode_ok = decodes = 0
    for case in cases:
        text = case.get("text", corpus.get(case["name"]))
        if text is None:
            failures.append(f"{case['name']}: not in the corpus")
            continue
        ids = tok(text)["input_ids"]
        if ids == case[key]:
            ids_ok += 1
        else:
            failures.append(f"{case['name']}: ids {ids} != {case[key]}")
        if "decoded" in case:
            decodes += 1
            plain = tok.decode(case[key], skip_special_tokens=False)
            skipped = tok.decode(case[key], skip_special_tokens=True)
            if plain == case["decoded"] and skipped == case.get("decoded_skip_special", skipped):
                decode_ok += 1
            else:
                failures.append(f"{case['name']}: decode {plain!r} / {skipped!r}")
    print(f"ids: {ids_ok}/{len(cases)} cases identical ({key})" + (f"; decodes: {decode_ok}/{decodes} identical" if decodes else ""))

    pairs = expected.get("pairs", [])
    if pairs:
        pair_ok = 0
        for p in pairs:
            kwargs = {"truncation": "longest_first", "max_length": p["max_length"]} if p.get("max_length") else {}
            enc = tok(p["a"], p["b"], **kwargs) if p.get("b") is not None else tok(p["a"], **kwargs)
            if enc["input_ids"] == p["ids"] and enc.get("token_type_ids", p["type_ids"]) == p["type_ids"]:
                pair_ok += 1
            else:
                failures.append(f"pair {p['a']!r} / {p.get('b')!r}: {enc['input_ids']} != {p['ids']}")
        print(f"pairs: {pair_ok}/{len(pairs)} identical (ids and token type ids)")

    specials = []
    for name in ("bos", "eos", "pad", "unk", "cls", "sep"):
        k = f"{name}_token_id"
        if k in expected:
            got = getattr(tok, k)
            specials.append(f"{name} {got}")
            if got != expected[k]:
                failures.append(f"{k}: {got} != {expected[k]}")
    if specials:
        print("special ids: " + ", ".join(specials))

    if args.chat:
        with open(args.chat, encoding="utf-8") as f:
            chat = json.load(f)
        rendered = tok.apply_chat_template(chat["messages"], tokenize=False, add_generation_prompt=chat["add_generation_prompt"])
        ids = tok.apply_chat_template(chat["messages"], tokenize=True, add_generation_prompt=chat["add_generation_prompt"])
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        if rendered == chat["text"] and ids == tok(chat["text"], add_special_tokens=False)["input_ids"]:
            print(f"apply_chat_template: identical to swift-lora's rendering ({len(ids)} ids)")
        else:
            failures.append(f"apply_chat_template: {rendered!r} != {chat['text']!r}")

    for f in failures:
        print("DIFFERENT: " + f)
    print("OK" if not failures else f"{len(failures)} differences")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
